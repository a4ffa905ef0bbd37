"""Small synthetic customer records with known persons, for tests and benchmarks of entity resolution.

``synthetic_customers`` makes clean-ish customer records of three sources
(``web``, ``store``, ``call_centre``) where each person appears one to three
times, spelled differently: Chinese name in simplified, traditional or pinyin
script, e-mail in other case or with a typo or missing, phone in another
format or missing, a birth date sometimes missing. The returned frame has the
columns ``crm_analytics.cleansing.validate.validate_source`` produces for
customers, plus ``person_id`` (the truth).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crm_analytics.cleansing import standardise as st

_SURNAMES = [("王", "王"), ("李", "李"), ("张", "張"), ("刘", "劉"), ("陈", "陳"), ("杨", "楊"), ("黄", "黃"), ("赵", "趙"),
             ("吴", "吳"), ("周", "周"), ("徐", "徐"), ("孙", "孫"), ("马", "馬"), ("朱", "朱"), ("胡", "胡"), ("郭", "郭")]
_GIVEN = [("伟", "偉"), ("芳", "芳"), ("娜", "娜"), ("敏", "敏"), ("静", "靜"), ("丽", "麗"), ("强", "強"), ("磊", "磊"),
          ("军", "軍"), ("洋", "洋"), ("勇", "勇"), ("艳", "艷"), ("杰", "傑"), ("娟", "娟"), ("涛", "濤"), ("明", "明"),
          ("超", "超"), ("秀", "秀"), ("霞", "霞"), ("平", "平"), ("刚", "剛"), ("桂", "桂"), ("英", "英"), ("华", "華")]
_CITIES = ["Shanghai", "Beijing", "Guangzhou", "Shenzhen", "Hangzhou", "Chengdu", "Wuhan", "Nanjing"]
_SOURCES = ["web", "store", "call_centre"]


def _persons(rng: np.random.Generator, n: int) -> pd.DataFrame:
    surname = rng.integers(0, len(_SURNAMES), n)
    given1, given2 = rng.integers(0, len(_GIVEN), n), rng.integers(0, len(_GIVEN), n)
    two_char_given = rng.random(n) < 0.7
    simplified = [_SURNAMES[s][0] + _GIVEN[a][0] + (_GIVEN[b][0] if t else "") for s, a, b, t in zip(surname, given1, given2, two_char_given)]
    traditional = [_SURNAMES[s][1] + _GIVEN[a][1] + (_GIVEN[b][1] if t else "") for s, a, b, t in zip(surname, given1, given2, two_char_given)]
    birth = pd.Timestamp("1960-01-01") + pd.to_timedelta(rng.integers(0, 365 * 45, n), unit="D")
    phone = [f"1{p}{d:08d}" for p, d in zip(rng.choice([38, 39, 58, 86, 37], n), rng.integers(0, 10**8, n))]
    email = [f"user{i}{rng.integers(10, 99)}@{rng.choice(['qq.com', '163.com', 'gmail.com'])}" for i in range(n)]
    return pd.DataFrame({"person_id": np.arange(n), "simplified": simplified, "traditional": traditional, "birth_date": birth,
                         "phone": phone, "email": email, "city": rng.choice(_CITIES, n), "gender": rng.choice(["F", "M"], n)})


def _spell(rng: np.random.Generator, persons: pd.DataFrame) -> pd.DataFrame:
    n = len(persons)
    script = rng.choice(["simplified", "traditional", "pinyin"], n, p=[0.6, 0.2, 0.2])
    pinyin = persons["simplified"].map(lambda s: st.name_key(s).split(" ")).map(lambda t: " ".join(x.title() for x in reversed(t)))
    name = np.where(script == "simplified", persons["simplified"], np.where(script == "traditional", persons["traditional"], pinyin))
    email = persons["email"].to_numpy(dtype=object).copy()
    upper = rng.random(n) < 0.2
    email[upper] = [e.upper() for e in email[upper]]
    typo = rng.random(n) < 0.05
    email[typo] = [e.replace("@", "x@", 1) for e in email[typo]]
    email[rng.random(n) < 0.3] = None
    phone = persons["phone"].to_numpy(dtype=object).copy()
    formatted = rng.random(n) < 0.3
    phone[formatted] = ["+86 " + p[:3] + "-" + p[3:7] + "-" + p[7:] for p in phone[formatted]]
    phone[rng.random(n) < 0.25] = None
    birth = persons["birth_date"].where(rng.random(n) > 0.1)
    return pd.DataFrame({"full_name": name, "email": email, "phone": phone, "birth_date": birth, "city": persons["city"].to_numpy(),
                         "gender": persons["gender"].to_numpy(), "person_id": persons["person_id"].to_numpy()})


def synthetic_customers(n_persons: int = 1000, *, random_state: int = 0) -> pd.DataFrame:
    """Return standardised customer records of three sources with the true ``person_id``.

    Parameters
    ----------
    n_persons : int
        Number of distinct people; each has 1-3 records (about 1.8 on average).
    random_state : int
        Seed.

    Returns
    -------
    DataFrame
        ``customer_id`` (source id, unique), ``source``, ``_source``, ``full_name``, ``name_key``,
        ``email``, ``phone``, ``birth_date``, ``gender``, ``city``, ``province``,
        ``signup_time``, ``acquisition_channel``, ``person_id``.
    """
    rng = np.random.default_rng(random_state)
    persons = _persons(rng, n_persons)
    n_records = rng.choice([1, 2, 3], n_persons, p=[0.4, 0.4, 0.2])
    chosen = persons.loc[persons.index.repeat(n_records)].reset_index(drop=True)
    records = _spell(rng, chosen)
    records["source"] = rng.choice(_SOURCES, len(records))
    records["_source"] = records["source"].map({"web": "web_signups", "store": "store_members", "call_centre": "call_centre_contacts"})
    records["customer_id"] = [f"{s[0].upper()}{i:07d}" for i, s in enumerate(records["source"])]
    names = st.standardise_name(records["full_name"])
    records["full_name"], records["name_key"] = names["full_name"], names["name_key"]
    records["email"] = st.standardise_email(records["email"])["email"]
    records["phone"] = st.standardise_phone(records["phone"], default_region="CN")["phone"]  # the records are Chinese
    records["signup_time"] = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 3 * 365 * 86400, len(records)), unit="s")
    records["province"] = pd.NA
    records["acquisition_channel"] = records["source"]
    return records.sample(frac=1.0, random_state=random_state).reset_index(drop=True)
