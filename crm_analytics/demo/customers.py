"""The three customer exports, spelled the way each source system spells things.

``web_signups`` (UTF-8 with BOM): names mostly in Chinese, some in pinyin,
traditional characters, stray whitespace or full-width letters; e-mails with
odd case, spaces or a full-width ``＠``; ISO times with ``+08:00`` or ``Z``.
``store_members`` (GB18030, Chinese headers): four date spellings, 女/男,
Chinese place names with or without 省/市. ``call_centre_contacts`` (Excel):
pinyin names typed by agents, Excel serial dates, some phones mangled by Excel
into ``1.38001E+10``. Every defect is logged in the ``DirtLog``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crm_analytics.demo import calendar, dirt, reference, text
from crm_analytics.demo.population import Persons
from crm_analytics.demo.records import CALL_CENTRE, STORE, WEB, Records

ALTERNATE_CONTACT_SHARE = 0.15  # duplicate records that share only name, birth date and city


def _given(persons: Persons, person: np.ndarray, column: int, field: int) -> pa.Array:
    table = [g[field] for g in reference.GIVEN_CHARACTERS] + [""]
    codes = persons.given[person, column].astype(np.int64)
    return text.lookup(table, np.where(codes < 0, len(table) - 1, codes))


def _name_forms(persons: Persons, person: np.ndarray) -> dict[str, pa.Array]:
    """Simplified, traditional and pinyin spellings of each person's name, plus surname and given name apart."""
    forms = {}
    for key, field in (("simplified", 0), ("traditional", 1)):
        surname = text.lookup([s[field] for s in reference.SURNAMES], persons.surname[person])
        given = pc.binary_join_element_wise(_given(persons, person, 0, field), _given(persons, person, 1, field), "")
        forms[key] = pc.binary_join_element_wise(surname, given, "")
        forms[f"{key}_parts"] = (surname, given)
    surname = text.lookup([s[2] for s in reference.SURNAMES], persons.surname[person])
    given = pc.binary_join_element_wise(_given(persons, person, 0, 2), _given(persons, person, 1, 2), "")
    forms["pinyin"] = pc.binary_join_element_wise(surname, pc.utf8_capitalize(given), " ")
    forms["email_local"] = pc.utf8_lower(pc.binary_join_element_wise(surname, given, ""))
    return forms


def canonical_names(persons: Persons) -> pa.Array:
    """Canonical full name (simplified Chinese characters) of every person."""
    return _name_forms(persons, np.arange(len(persons)))["simplified"]


def canonical_emails(persons: Persons, person: np.ndarray | None = None, *, alternate: np.ndarray | None = None) -> pa.Array:
    """Canonical e-mail address; ``alternate`` rows get a second, different address of the same person."""
    person = np.arange(len(persons)) if person is None else person
    number = persons.email_number[person].copy()
    if alternate is not None:
        number[alternate] += 10 ** (len(str(len(persons))) + 2)
    local = pc.binary_join_element_wise(_name_forms(persons, person)["email_local"], text.integer_text(number), "")
    return pc.binary_join_element_wise(local, text.lookup(reference.EMAIL_DOMAINS, persons.email_domain[person]), "@")


def e164(phone: np.ndarray) -> pa.Array:
    """``+86`` followed by the 11-digit mobile number."""
    return pc.binary_join_element_wise("+86", text.integer_text(phone), "")


class _Export:
    """Builds the dirty columns of one customer export and logs what it plants."""

    def __init__(self, rng: np.random.Generator, log: dirt.DirtLog, source: str, ids: pa.Array) -> None:
        self.rng, self.log, self.source, self.ids = rng, log, source, ids
        self.n = len(ids)

    def plant(self, variant: np.ndarray, kinds: dict[int, str], column: str, values: pa.Array) -> pa.Array:
        """Log rows of each listed variant code under its kind; ``None``-kind codes become missing values."""
        for code, kind in kinds.items():
            rows = np.flatnonzero(variant == code)
            taken = pa.array(rows)
            self.log.add(self.source, rows, kind, column=column, record_ids=self.ids.take(taken), values=values.take(taken))
        return values

    def variants(self, weights: Sequence[float]) -> np.ndarray:
        return text.choose(self.rng, self.n, weights)

    def names(self, forms: dict[str, pa.Array], weights: Sequence[float]) -> pa.Array:
        """0 simplified, 1 pinyin, 2 traditional, 3 extra whitespace, 4 upper-case pinyin, 5 full-width pinyin, 6 missing."""
        variant = self.variants(weights)
        surname, given = forms["simplified_parts"]
        space = self.rng.integers(0, 3, self.n)
        spaced = pc.if_else(pa.array(space == 0), pc.binary_join_element_wise(" ", forms["simplified"], ""),
                            pc.if_else(pa.array(space == 1), pc.binary_join_element_wise(surname, given, " "),
                                       pc.binary_join_element_wise(forms["simplified"], "  ", "")))
        values = text.assemble(self.n, variant, [
            lambda r: forms["simplified"].take(pa.array(r)),
            lambda r: forms["pinyin"].take(pa.array(r)),
            lambda r: forms["traditional"].take(pa.array(r)),
            lambda r: spaced.take(pa.array(r)),
            lambda r: pc.utf8_upper(forms["pinyin"].take(pa.array(r))),
            lambda r: dirt.full_width(forms["pinyin"].take(pa.array(r))),
            None,
        ])
        kinds = {1: "name_pinyin", 2: "name_traditional", 3: "extra_whitespace", 4: "name_pinyin", 5: "full_width", 6: "missing_value"}
        return self.plant(variant, kinds, "full_name", values)

    def emails(self, email: pa.Array, weights: Sequence[float]) -> pa.Array:
        """0 as is, 1 upper case, 2 surrounding spaces, 3 full-width ＠, 4 invalid, 5 missing."""
        variant = self.variants(weights)
        variant[dirt.pick(self.rng, self.n, 0.0, minimum=1 if self.n >= 50 else 0)] = 4
        broken = self.rng.integers(0, 3, self.n)
        invalid = pc.if_else(pa.array(broken == 0), pc.replace_substring(email, "@", ""),
                             pc.if_else(pa.array(broken == 1), pc.replace_substring(email, "@", "@@"),
                                        pc.replace_substring_regex(email, "@.*$", "@")))
        values = text.assemble(self.n, variant, [
            lambda r: email.take(pa.array(r)),
            lambda r: pc.utf8_upper(email.take(pa.array(r))),
            lambda r: pc.binary_join_element_wise(" ", email.take(pa.array(r)), " ", ""),
            lambda r: pc.replace_substring(email.take(pa.array(r)), "@", "＠"),
            lambda r: invalid.take(pa.array(r)),
            None,
        ])
        kinds = {1: "email_case", 2: "extra_whitespace", 3: "full_width", 4: "invalid_email", 5: "missing_value"}
        return self.plant(variant, kinds, "email", values)

    def phones(self, phone: np.ndarray, weights: Sequence[float]) -> pa.Array:
        """0 plain, 1 ``+86 138-0013-8000``, 2 ``0086…``, 3 ``138 0013 8000``, 4 ``+86…``, 5 ``138-0013-8000``,
        6 Excel scientific notation ``1.38001E+10`` (unrepairable), 7 missing."""
        variant = self.variants(weights)
        if weights[6] > 0 and self.n and not (variant == 6).any():  # always plant at least one
            variant[self.rng.integers(0, self.n)] = 6
        digits = text.integer_text(phone)
        a, b, c = (pc.utf8_slice_codeunits(digits, i, j) for i, j in ((0, 3), (3, 7), (7, 11)))
        mantissa = text.integer_text(np.round(phone / 1e5).astype(np.int64))
        scientific = pc.binary_join_element_wise(
            pc.utf8_rtrim(pc.utf8_rtrim(pc.binary_join_element_wise(pc.utf8_slice_codeunits(mantissa, 0, 1), pc.utf8_slice_codeunits(mantissa, 1, 6), "."), characters="0"), characters="."),
            "E+10", "")
        forms = [
            digits,
            pc.binary_join_element_wise("+86 ", a, "-", b, "-", c, ""),
            pc.binary_join_element_wise("0086", digits, ""),
            pc.binary_join_element_wise(a, b, c, " "),
            pc.binary_join_element_wise("+86", digits, ""),
            pc.binary_join_element_wise(a, b, c, "-"),
            scientific,
        ]
        values = text.assemble(self.n, variant, [(lambda f: (lambda r: f.take(pa.array(r))))(f) for f in forms] + [None])
        return self.plant(variant, {6: "phone_scientific_notation", 7: "missing_value"}, "phone", values)

    def dates(self, t: np.ndarray, formats: Sequence[str | None], weights: Sequence[float], column: str) -> pa.Array:
        """Local dates or times of ``t`` in one of ``formats`` per row (``iso_z``: UTC with ``Z``; ``None``: missing)."""
        variant = self.variants(weights)

        def builder(fmt: str | None):
            if fmt is None:
                return None
            if fmt == "iso_z":
                return lambda r: pc.binary_join_element_wise(text.iso_seconds(t[r]), "Z", "")
            return lambda r: text.local_format(t[r], fmt)

        values = text.assemble(self.n, variant, [builder(f) for f in formats])
        return self.plant(variant, {i: "missing_value" for i, f in enumerate(formats) if f is None}, column, values)

    def invalid_dates(self, values: pa.Array, t: np.ndarray, column: str, share: float) -> pa.Array:
        """Replace a few dates by impossible ones (Feb 30, month 13) written in the column's main format."""
        rows = dirt.pick(self.rng, self.n, share, minimum=1 if self.n >= 100 else 0, eligible=pc.is_valid(values).to_numpy(zero_copy_only=False))
        year = text.local_format(t[rows], "%Y")
        bad = pc.if_else(pa.array(self.rng.random(len(rows)) < 0.5), pc.binary_join_element_wise(year, "-02-30", ""),
                         pc.binary_join_element_wise(year, "-13-05", ""))
        self.log.add(self.source, rows, "invalid_date", column=column, record_ids=self.ids.take(pa.array(rows)), values=bad)
        return dirt.replace_rows(values, rows, bad)

    def future(self, values: pa.Array, t: np.ndarray, period: calendar.Period, fmt: str, column: str) -> tuple[pa.Array, np.ndarray]:
        """Move a handful of times past the export date."""
        rows = dirt.pick(self.rng, self.n, 0.0005, minimum=min(2, self.n))
        future = dirt.future_times(self.rng, period, len(rows))
        written = text.local_format(future, fmt)
        self.log.add(self.source, rows, "future_date", column=column, record_ids=self.ids.take(pa.array(rows)), values=written)
        return dirt.replace_rows(values, rows, written), rows

    def duplicates(self, records: Records, rows: np.ndarray, all_ids: pa.Array) -> None:
        """Log second records of a person in this source; the value is the id of the person's first record."""
        person = records.person[rows]
        second = records.is_duplicate[rows]
        first_row = np.full(int(person.max()) + 1 if len(person) else 0, -1, dtype=np.int64)
        first_row[person[~second]] = rows[~second]
        at = np.flatnonzero(second)
        self.log.add(self.source, at, "duplicate_record", column="customer_id", record_ids=self.ids.take(pa.array(at)),
                     values=all_ids.take(pa.array(first_row[person[at]])))


def _days_to_seconds(days: np.ndarray) -> np.ndarray:
    """UTC seconds of local midnight of calendar days."""
    return days.astype("datetime64[D]").astype(np.int64) * calendar.DAY - calendar.LOCAL_OFFSET


def _places(persons: Persons, person: np.ndarray) -> dict[str, pa.Array]:
    cities = reference.CITIES
    city = persons.city[person]
    province_cn = [c[3] + ("市" if c[1] in reference.MUNICIPALITIES else "") if c[1] not in reference.AUTONOMOUS_REGIONS
                   else reference.AUTONOMOUS_REGIONS[c[1]] for c in cities]
    province_cn_full = [p if p.endswith(("市", "自治区")) else p + "省" for p in province_cn]
    return {
        "city": text.lookup([c[0] for c in cities], city),
        "province": text.lookup([c[1] for c in cities], city),
        "city_cn": text.lookup([c[2] for c in cities], city),
        "city_cn_full": text.lookup([c[2] + "市" for c in cities], city),
        "province_cn": text.lookup([c[3] for c in cities], city),
        "province_cn_full": text.lookup(province_cn_full, city),
    }


def _pick_place(export: _Export, forms: list[pa.Array], weights: Sequence[float], column: str, kinds: dict[int, str]) -> pa.Array:
    variant = export.variants(list(weights))
    values = text.assemble(export.n, variant, [(lambda f: (lambda r: f.take(pa.array(r))))(f) for f in forms] + [None])
    return export.plant(variant, kinds | {len(forms): "missing_value"}, column, values)


def identity(rng: np.random.Generator, persons: Persons, records: Records, rows: np.ndarray) -> dict[str, object]:
    """Person, e-mail and phone behind each record row; some duplicates carry a second address and number."""
    person = records.person[rows]
    alternate = records.is_duplicate[rows] & (rng.random(len(rows)) < ALTERNATE_CONTACT_SHARE)
    phone = persons.phone[person].copy()
    prefixes = np.array(reference.MOBILE_PREFIXES, dtype=np.int64)
    phone[alternate] = prefixes[rng.integers(0, len(prefixes), alternate.sum())] * 10**8 + rng.integers(0, 10**8, alternate.sum())
    return {"person": person, "email": canonical_emails(persons, person, alternate=alternate), "phone": phone}


def _open_export(rng, persons: Persons, records: Records, ids: pa.Array, log: dirt.DirtLog, source: int, name: str):
    """The export builder of one customer source, its record rows, identities, name spellings and places."""
    rows = np.flatnonzero(records.source == source)
    who = identity(rng, persons, records, rows)
    export = _Export(rng, log, name, ids.take(pa.array(rows)))
    export.duplicates(records, rows, ids)
    return export, rows, who, _name_forms(persons, who["person"]), _places(persons, who["person"])


def web_signups(rng, persons: Persons, records: Records, ids: pa.Array, period: calendar.Period, log: dirt.DirtLog) -> dict[str, pa.Array]:
    """Columns (canonical names) of ``web_signups``."""
    export, rows, who, forms, places = _open_export(rng, persons, records, ids, log, WEB, "web_signups")
    person = who["person"]
    signup_t = records.signup_time[rows]
    signup = export.dates(signup_t, ["%Y-%m-%dT%H:%M:%S+08:00", "iso_z", "%Y-%m-%d"], [0.6, 0.35, 0.05], "signup_time")
    signup, _ = export.future(signup, signup_t, period, "%Y-%m-%dT%H:%M:%S+08:00", "signup_time")
    birth_t = _days_to_seconds(persons.birth_date[person])
    birth = export.dates(birth_t, ["%Y-%m-%d", None], [0.9, 0.1], "birth_date")
    acquisition = persons.acquisition_channel[person]
    web_acquired = (acquisition < len(reference.WEB_ACQUISITION)) & ~records.is_duplicate[rows]
    channel = text.lookup(reference.ACQUISITION_CHANNELS, acquisition)
    utm_variant = np.where(web_acquired, text.choose(rng, len(rows), [0.9, 0.05, 0.05]), 2)
    utm = text.assemble(len(rows), utm_variant, [lambda r: channel.take(pa.array(r)), lambda r: pc.utf8_upper(channel.take(pa.array(r))), None])
    export.plant(np.where(web_acquired, utm_variant, 0), {1: "case_variant", 2: "missing_value"}, "acquisition_channel", utm)
    gender_codes = persons.gender[person]
    gender_variant = text.choose(rng, len(rows), [0.8, 0.1, 0.1])
    gender = text.assemble(len(rows), gender_variant, [
        lambda r: text.lookup(("F", "M"), gender_codes[r]), lambda r: text.lookup(("female", "male"), gender_codes[r]), None])
    export.plant(gender_variant, {2: "missing_value"}, "gender", gender)
    return {
        "customer_id": export.ids,
        "full_name": export.names(forms, [0.7, 0.15, 0.04, 0.05, 0.03, 0.02, 0.01]),
        "email": export.emails(who["email"], [0.86, 0.05, 0.04, 0.02, 0.005, 0.025]),
        "phone": export.phones(who["phone"], [0.35, 0.12, 0.07, 0.07, 0.07, 0.07, 0.0, 0.25]),
        "gender": gender,
        "birth_date": export.invalid_dates(birth, birth_t, "birth_date", 0.002),
        "province": _pick_place(export, [places["province"], places["province_cn"], pc.utf8_lower(places["province"])], [0.85, 0.06, 0.04, 0.05], "province", {1: "chinese_place_name", 2: "case_variant"}),
        "city": _pick_place(export, [places["city"], places["city_cn"], pc.utf8_lower(places["city"]), pc.binary_join_element_wise(places["city"], "City", " ")], [0.82, 0.06, 0.04, 0.04, 0.04], "city", {1: "chinese_place_name", 2: "case_variant", 3: "place_suffix"}),
        "acquisition_channel": utm,
        "signup_time": signup,
    }


def store_members(rng, persons: Persons, records: Records, ids: pa.Array, period: calendar.Period, log: dirt.DirtLog) -> dict[str, pa.Array]:
    """Columns (canonical names) of ``store_members``."""
    export, rows, who, forms, places = _open_export(rng, persons, records, ids, log, STORE, "store_members")
    person = who["person"]
    date_formats = ["%Y-%m-%d", "%Y/%m/%d", "%Y年%m月%d日", "%Y%m%d"]
    signup_t = records.signup_time[rows]
    signup = export.dates(signup_t, date_formats, [0.4, 0.3, 0.15, 0.15], "signup_time")
    signup, _ = export.future(signup, signup_t, period, "%Y-%m-%d", "signup_time")
    birth_t = _days_to_seconds(persons.birth_date[person])
    birth = export.dates(birth_t, date_formats + [None], [0.35, 0.25, 0.15, 0.15, 0.1], "birth_date")
    gender_variant = text.choose(rng, len(rows), [0.9, 0.1])
    gender = text.assemble(len(rows), gender_variant, [lambda r: text.lookup(("女", "男"), persons.gender[person[r]]), None])
    export.plant(gender_variant, {1: "missing_value"}, "gender", gender)
    return {
        "customer_id": export.ids,
        "full_name": export.names(forms, [0.85, 0.0, 0.06, 0.06, 0.0, 0.0, 0.03]),
        "phone": export.phones(who["phone"], [0.55, 0.05, 0.05, 0.15, 0.1, 0.07, 0.0, 0.03]),
        "email": export.emails(who["email"], [0.43, 0.02, 0.01, 0.02, 0.003, 0.5]),
        "signup_time": signup,
        "province": _pick_place(export, [places["province_cn_full"], places["province_cn"]], [0.5, 0.45, 0.05], "province", {}),
        "city": _pick_place(export, [places["city_cn_full"], places["city_cn"]], [0.5, 0.45, 0.05], "city", {}),
        "gender": gender,
        "birth_date": export.invalid_dates(birth, birth_t, "birth_date", 0.002),
    }


def call_centre_contacts(rng, persons: Persons, records: Records, ids: pa.Array, period: calendar.Period, log: dirt.DirtLog) -> dict[str, object]:
    """Columns (canonical names) of ``call_centre_contacts``; ``signup_time`` is a (text, Excel serial) pair."""
    export, rows, who, forms, places = _open_export(rng, persons, records, ids, log, CALL_CENTRE, "call_centre_contacts")
    created_t = records.signup_time[rows].copy()
    created_text = export.dates(created_t, ["%Y-%m-%d"], [1.0], "signup_time")
    created_text, future_rows = export.future(created_text, created_t, period, "%Y-%m-%d", "signup_time")
    serial = text.excel_serial(created_t)
    serial[future_rows] = np.nan
    as_text = rng.random(len(rows)) < 0.2
    as_text[future_rows] = True
    serial[as_text] = np.nan
    log.add_file("call_centre_contacts", "excel_serial_date", column="signup_time", value="most created values are Excel day numbers")
    phones = export.phones(who["phone"], [0.6, 0.05, 0.04, 0.1, 0.05, 0.06, 0.03, 0.07])
    return {
        "customer_id": export.ids,
        "full_name": export.names(forms, [0.55, 0.33, 0.02, 0.05, 0.0, 0.0, 0.05]),
        "phone": phones,
        "email": export.emails(who["email"], [0.35, 0.02, 0.01, 0.01, 0.003, 0.6]),
        "signup_time": (created_text, serial),
        "city": _pick_place(export, [places["city_cn"], places["city"], places["city_cn_full"]], [0.4, 0.4, 0.1, 0.1], "city", {2: "place_suffix"}),
    }
