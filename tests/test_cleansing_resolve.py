"""Entity resolution: exact keys, the Fellegi-Sunter model, clusters, stable keys, lineage, survivorship."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crm_analytics.cleansing import quality, resolve, survive
from crm_analytics.cleansing.synthetic import synthetic_customers
from crm_analytics.frames import MissingColumnError


def customer(cid, name, *, email=None, phone=None, birth=None, city=None, gender="F", source="web", signup="2024-01-01"):
    from crm_analytics.cleansing import standardise as st

    return {"customer_id": cid, "_source": f"{source}_src", "source": source, "full_name": st.normalise_name(name), "name_key": st.name_key(name),
            "email": email, "phone": phone, "birth_date": pd.Timestamp(birth) if birth else pd.NaT, "city": city,
            "province": None, "gender": gender, "signup_time": pd.Timestamp(signup), "acquisition_channel": source}


@pytest.fixture(scope="module")
def tiny():
    return pd.DataFrame([
        customer("W1", "张三", email="zs@qq.com", phone="+8613800138000", birth="1990-01-02", city="Shenzhen", signup="2023-01-01"),
        customer("S1", "張三", email="zs@qq.com", birth="1990-01-02", city="Shenzhen", source="store", signup="2024-05-01"),
        customer("C1", "Zhang San", phone="+8613800138000", city="Shenzhen", source="call_centre", signup="2022-06-01"),
        customer("W2", "李四", email="ls@163.com", birth="1985-03-04", city="Beijing", gender="M"),
        customer("S2", "李四", birth="1985-03-04", city="Beijing", gender="M", source="store"),
        customer("W3", "李四", email="other@163.com", birth="1970-11-12", city="Chengdu", gender="M"),
    ])


@pytest.fixture(scope="module")
def synthetic():
    records = synthetic_customers(3000, random_state=7)
    return records, resolve.resolve_entities(records, match_threshold=0.9)


def test_exact_links_follow_email_and_phone(tiny):
    records = resolve.prepare_records(tiny)
    links = resolve.exact_links(records)
    assert set(map(tuple, links[["left_id", "right_id", "match_rule"]].to_numpy())) == {(0, 1, "exact_email"), (0, 2, "exact_phone")}


def test_person_key_links_records_whatever_their_other_fields(tiny):
    """The same known person id in two sources is one customer, before and beside any probabilistic matching."""
    keyed = pd.concat([
        tiny.assign(person_key=pd.NA),
        pd.DataFrame([
            customer("A1", "Anne Martin", email="anne@example.com", source="shop_2010") | {"person_key": "12417"},
            customer("B7", "A. Martin-Dubois", phone="+33612345678", source="shop_2011", signup="2011-01-01") | {"person_key": " 12417 "},
            customer("B8", "Zhang San", source="shop_2011") | {"person_key": "99999"},
        ]),
    ], ignore_index=True)
    result = resolve.resolve_entities(keyed, match_threshold=0.9)
    keys = dict(zip(keyed["customer_id"], result.keys))
    assert keys["A1"] == keys["B7"], "no shared e-mail, phone or name: only the person key joins them"
    assert keys["B8"] != keys["A1"] and keys["W1"] == keys["S1"] == keys["C1"]
    lineage = result.lineage.set_index("source_customer_id")
    assert lineage.loc["B7", "match_rule"] == "exact_person_key"
    records = resolve.prepare_records(keyed)
    rules = set(resolve.exact_links(records)["match_rule"])
    assert rules == {"exact_person_key", "exact_email", "exact_phone"}


def test_records_without_person_key_column_resolve_as_before(tiny):
    assert resolve.prepare_records(tiny)["person_key"].isna().all()
    assert not (resolve.exact_links(resolve.prepare_records(tiny))["match_rule"] == "exact_person_key").any()


def test_resolution_of_the_tiny_case(tiny):
    result = resolve.resolve_entities(tiny, match_threshold=0.9)
    keys = dict(zip(tiny["customer_id"], result.keys))
    assert keys["W1"] == keys["S1"] == keys["C1"]  # one person in three scripts, joined through e-mail and phone
    assert keys["W2"] == keys["S2"]  # same pinyin name, birth date and city
    assert keys["W3"] != keys["W2"]  # same name, everything else differs
    assert len(set(keys.values())) == 3


def test_lineage_keeps_every_source_id_with_rule_and_weight(tiny):
    result = resolve.resolve_entities(tiny, match_threshold=0.9)
    lineage = result.lineage.set_index("source_customer_id")
    assert list(lineage.index) == list(tiny["customer_id"])
    assert lineage.loc["S1", "match_rule"] == "exact_email" and lineage.loc["C1", "match_rule"] == "exact_phone"
    assert lineage.loc["S2", "match_rule"] == "probabilistic" and lineage.loc["S2", "match_weight"] > 0
    assert lineage.loc["W3", "match_rule"] == "single_record" and pd.isna(lineage.loc["W3", "match_weight"])


def test_keys_are_stable_under_row_order_and_unrelated_records(tiny):
    first = dict(zip(tiny["customer_id"], resolve.resolve_entities(tiny).keys))
    shuffled = tiny.sample(frac=1.0, random_state=3).reset_index(drop=True)
    extra = pd.concat([shuffled, pd.DataFrame([customer("W9", "王五", email="w5@qq.com", city="Wuhan")])], ignore_index=True)
    second = dict(zip(extra["customer_id"], resolve.resolve_entities(extra).keys))
    assert all(first[c] == second[c] for c in first)


def test_missing_column_is_named(tiny):
    with pytest.raises(MissingColumnError, match="name_key"):
        resolve.prepare_records(tiny.drop(columns=["name_key"]))


def test_input_not_mutated(tiny):
    before = tiny.copy()
    resolve.resolve_entities(tiny)
    pd.testing.assert_frame_equal(tiny, before)


def test_accuracy_on_synthetic_persons(synthetic):
    records, result = synthetic
    predicted = pd.DataFrame({"source": records["_source"], "source_customer_id": records["customer_id"], "customer_key": result.keys}).astype("string")
    truth = pd.DataFrame({"source": records["_source"], "source_record_id": records["customer_id"], "person_id": records["person_id"]})
    overall = quality.pairwise_accuracy(predicted, truth).iloc[0]
    assert overall["precision"] >= 0.98 and overall["recall"] >= 0.9, overall


def test_model_weights_make_sense(synthetic):
    table = synthetic[1].model.level_weights().set_index(["comparison", "level"])["match_weight"]
    assert table[("name", 3)] > 5 and table[("name", 0)] < 0
    assert table[("email", 2)] > table[("email", 1)] > table[("email", 0)]
    assert 0 < synthetic[1].model.prior_ < 0.01


def test_both_engines_resolve_synthetic_persons():
    pytest.importorskip("splink")
    records = synthetic_customers(400, random_state=1)
    ours = resolve.resolve_entities(records, engine="fellegi_sunter")
    theirs = resolve.resolve_entities(records, engine="splink")
    truth = pd.DataFrame({"source": records["_source"], "source_record_id": records["customer_id"], "person_id": records["person_id"]})
    for result in (ours, theirs):
        predicted = pd.DataFrame({"source": records["_source"], "source_customer_id": records["customer_id"], "customer_key": result.keys}).astype("string")
        assert quality.pairwise_accuracy(predicted, truth).iloc[0]["f1"] > 0.9


def test_unknown_engine_is_refused(tiny):
    with pytest.raises(ValueError, match="engine"):
        resolve.resolve_entities(tiny, engine="magic")


def test_survivorship_latest_non_missing_and_first_acquisition(tiny):
    keys = resolve.resolve_entities(tiny).keys
    unified = survive.survive(tiny, keys).set_index("customer_id")
    zhang = unified.loc[keys.iloc[0]]
    assert zhang["n_source_records"] == 3
    assert zhang["full_name"] == "張三"  # the most recent record (store, 2024-05-01)
    assert zhang["phone"] == "+8613800138000"  # most recent non-missing
    assert zhang["signup_time"] == pd.Timestamp("2022-06-01") and zhang["source"] == "call_centre"
    assert len(unified) == keys.nunique()


def test_pairwise_accuracy_hand_checked():
    predicted = pd.DataFrame({"source": ["a", "a", "b", "b"], "source_customer_id": ["1", "2", "3", "4"], "customer_key": ["k1", "k1", "k1", "k2"]})
    truth = pd.DataFrame({"source": ["a", "a", "b", "b"], "source_record_id": ["1", "2", "3", "4"], "person_id": [1, 1, 2, 2]})
    result = quality.pairwise_accuracy(predicted, truth).set_index(["source_a", "source_b"])
    # predicted pairs: (1,2) (1,3) (2,3); true pairs: (1,2) (3,4); correct: (1,2)
    assert result.loc[("all", "all"), ["n_predicted_pairs", "n_true_pairs", "n_correct_pairs"]].tolist() == [3, 2, 1]
    assert result.loc[("all", "all"), "precision"] == pytest.approx(1 / 3)
    assert result.loc[("all", "all"), "recall"] == pytest.approx(0.5)
    assert result.loc[("a", "b"), "n_predicted_pairs"] == 2 and result.loc[("a", "b"), "n_correct_pairs"] == 0
    assert result.loc[("b", "b"), "n_true_pairs"] == 1 and pd.isna(result.loc[("b", "b"), "precision"])


# ------------------------------------------------------------------------- oversized blocks


@pytest.fixture(scope="module")
def common_name():
    """300 different people named 王伟 in 300 cities, 20 of whom also called the call centre (name, city, phone only).

    Beside a background of synthetic persons that trains the model. Only the name and the city tie a
    call-centre record to its web record, and the name's block (320 records) is above the cap.
    """
    background = synthetic_customers(1500, random_state=11)
    web = [customer(f"WW{i}", "王伟", email=f"wangwei{i}@example.com", birth=f"{1960 + i % 40}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    city=f"City{i}", gender="M") | {"person_id": f"ww{i}"} for i in range(300)]
    calls = [customer(f"CW{i}", "Wang Wei", phone=f"+86139{i:08d}", city=f"City{i}", gender=None, source="call_centre")
             | {"person_id": f"ww{i}"} for i in range(20)]
    return pd.concat([background, pd.DataFrame(web + calls)], ignore_index=True)


def _pair_ids(pairs):
    return set(zip(pairs["left_id"].tolist(), pairs["right_id"].tolist()))


def test_an_oversized_name_block_is_split_by_city_not_skipped(common_name):
    records = resolve.prepare_records(common_name)
    assert records["name_key"].value_counts().max() > 200, "the fixture must hold a block the old cap skipped"
    ids = dict(zip(common_name["customer_id"], records["record_id"]))
    duplicates = {(min(ids[f"WW{i}"], ids[f"CW{i}"]), max(ids[f"WW{i}"], ids[f"CW{i}"])) for i in range(20)}
    skipped = _pair_ids(resolve.candidate_pairs(records, max_block_size=200, split_keys=()))
    assert not duplicates & skipped, "without split keys the oversized block is skipped, as before"
    split = resolve.candidate_pairs(records, max_block_size=200)
    assert duplicates <= _pair_ids(split)
    assert len(split) <= len(resolve.BLOCKING_RULES) * (200 - 1) / 2 * len(records)


def _fixed_domain_records(n_records: int, *, seed: int = 5) -> pd.DataFrame:
    """Records of distinct people whose birth dates (60 days) and cities (3) come from fixed sets.

    The shape of a growing customer base: the birth-date-and-city blocks grow with the records.
    """
    rng = np.random.default_rng(seed)
    days = pd.Timestamp("1980-01-01") + pd.to_timedelta(rng.integers(0, 60, n_records), unit="D")
    frame = pd.DataFrame({
        "_source": "web_src", "customer_id": [f"R{i}" for i in range(n_records)],
        "email": None, "phone": None, "name_key": [f"person {i:05d}" for i in range(n_records)],
        "birth_date": days, "gender": rng.choice(["F", "M"], n_records), "city": rng.choice(["Alpha", "Beta", "Gamma"], n_records),
    })
    return resolve.prepare_records(frame)


@pytest.mark.parametrize("n_records", [300, 1200, 4800])
def test_pairs_per_record_stay_bounded_as_fixed_domain_blocks_grow(n_records):
    """Each record is compared within one block of at most the cap per rule, however big the key's blocks grow."""
    records = _fixed_domain_records(n_records)
    rule = "l.birth_date = r.birth_date AND l.city = r.city"
    block_sizes = records.groupby(["birth_date", "city"]).size()
    pairs = resolve.candidate_pairs(records, rules=[rule])
    assert len(pairs) / n_records <= (resolve.MAX_BLOCK_SIZE - 1) / 2
    assert len(pairs) / n_records <= 2.0, "no more than the demo's 2 pairs per record, at every size"
    if block_sizes.median() > resolve.MAX_BLOCK_SIZE:
        assert len(pairs) > 0, "oversized blocks are split (by gender, then name head), not skipped"


def test_a_larger_cap_lets_the_pairs_per_record_grow_with_the_blocks():
    """The growth the cap prevents: with blocks of up to 20 records the pairs per record rise with the records."""
    rule = "l.birth_date = r.birth_date AND l.city = r.city"
    per_record = [len(resolve.candidate_pairs(_fixed_domain_records(n), rules=[rule], max_block_size=20)) / n for n in (300, 1200)]
    assert per_record[1] > 3 * per_record[0] and per_record[1] > 1.5


def test_duplicates_in_an_oversized_block_are_merged_and_strangers_are_not(common_name):
    result = resolve.resolve_entities(common_name)
    keys = dict(zip(common_name["customer_id"], result.keys))
    assert all(keys[f"WW{i}"] == keys[f"CW{i}"] for i in range(20)), "each caller is the web customer of the same name and city"
    assert len({keys[f"WW{i}"] for i in range(300)}) == 300, "namesakes in other cities stay apart"
    predicted = pd.DataFrame({"source": common_name["_source"], "source_customer_id": common_name["customer_id"], "customer_key": result.keys}).astype("string")
    truth = pd.DataFrame({"source": common_name["_source"], "source_record_id": common_name["customer_id"], "person_id": common_name["person_id"]})
    overall = quality.pairwise_accuracy(predicted, truth).iloc[0]
    assert overall["precision"] >= 0.98 and overall["recall"] >= 0.9, overall


def test_split_levels_add_one_usable_key_per_level():
    assert resolve.split_levels(["name_key"], ("city", "birth_year", "name_head")) == [["name_key"], ["name_key", "city"], ["name_key", "city", "birth_year"]]
    assert resolve.split_levels(["birth_date", "city"], ("city", "birth_year", "gender")) == [["birth_date", "city"], ["birth_date", "city", "gender"]]


def test_blocks_within_the_cap_give_the_same_pairs_with_or_without_split_keys(tiny):
    records = resolve.prepare_records(tiny)
    assert _pair_ids(resolve.candidate_pairs(records)) == _pair_ids(resolve.candidate_pairs(records, split_keys=()))


# ------------------------------------------------------------------ records missing a split key


@pytest.fixture(scope="module")
def split_orphans():
    """15 people named 王伟 in one city, one birth year each, and 5 of them again as call-centre records without a birth date.

    The name-and-city block (20 records) is above the cap and split by birth year, which the
    call-centre records lack.
    """
    web = [customer(f"WW{i}", "王伟", email=f"wangwei{i}@example.com", birth=f"{1960 + i}-03-04", city="Alpha", gender="M") for i in range(15)]
    calls = [customer(f"CW{i}", "Wang Wei", phone=f"+86139{i:08d}", city="Alpha", gender=None, source="call_centre") for i in range(5)]
    frame = pd.DataFrame(web + calls)
    records = resolve.prepare_records(frame)
    ids = dict(zip(frame["customer_id"], records["record_id"]))
    return records, {(ids[f"WW{i}"], ids[f"CW{i}"]) for i in range(5)}


def test_a_record_missing_a_split_key_is_compared_with_the_block_it_was_split_from(split_orphans):
    records, duplicates = split_orphans
    name_rule = ["l.name_key = r.name_key"]
    dropped = _pair_ids(resolve.candidate_pairs(records, rules=name_rule, max_parent_size=0))
    assert not duplicates & dropped, "without the parent block, a record lacking the birth year drops out of the split"
    pairs = resolve.candidate_pairs(records, rules=name_rule)
    assert duplicates <= _pair_ids(pairs)
    n_missing = int(records["birth_year"].isna().sum())
    bound = len(records) * (resolve.MAX_BLOCK_SIZE - 1) / 2 + n_missing * (resolve.MAX_PARENT_SIZE - 1)
    assert len(pairs) <= bound, "each record missing the key adds at most the parent block's size in pairs"
    assert len(pairs) == n_missing * (len(records) - 1) - n_missing * (n_missing - 1) / 2, "exactly: each with every other record, once"


def test_a_parent_block_above_its_cap_is_not_compared_whole(split_orphans):
    records, duplicates = split_orphans
    pairs = resolve.candidate_pairs(records, rules=["l.name_key = r.name_key"], max_parent_size=len(records) - 1)
    assert not duplicates & _pair_ids(pairs) and len(pairs) == 0


def test_missing_fields_are_taken_from_exact_linked_records_unless_they_conflict():
    frame = pd.DataFrame([
        customer("A1", "张三", phone="+8613800138000", city="Shenzhen", gender=None, source="call_centre"),
        customer("A2", "张三", phone="+8613800138000", email="zs@qq.com", birth="1990-01-02", gender="M", source="store"),
        customer("B1", "李四", email="ls@163.com", city="Beijing", gender=None),
        customer("B2", "李四", email="ls@163.com", birth="1985-03-04", source="store"),
        customer("B3", "李四", email="ls@163.com", birth="1971-12-30", source="store"),
        customer("C1", "王五", city="Wuhan", gender=None),
    ])
    records = resolve.prepare_records(frame)
    filled = resolve.fill_from_persons(records, resolve.cluster_records(len(records), resolve.exact_links(records))).set_index("source_customer_id")
    assert filled.loc["A1", "birth_date"] == pd.Timestamp("1990-01-02") and filled.loc["A1", "birth_year"] == 1990
    assert filled.loc["A1", "email"] == "zs@qq.com" and filled.loc["A1", "email_local"] == "zs" and filled.loc["A1", "gender"] == "M"
    assert filled.loc["A2", "city"] == "Shenzhen", "filled both ways"
    assert pd.isna(filled.loc["B1", "birth_date"]), "two different birth dates among the linked records: left missing"
    assert filled.loc["B2", "city"] == filled.loc["B3", "city"] == "Beijing"
    assert pd.isna(filled.loc["C1", "birth_date"]) and filled.loc["C1", "city"] == "Wuhan", "a record linked to none keeps its own fields"
    assert records.loc[0, "email"] is pd.NA or pd.isna(records.loc[0, "email"]), "the records themselves are not changed"


def test_compatible_namesakes_leave_out_the_namesakes_a_record_contradicts():
    # records 0 (a caller: name, city, phone), 1 (same name and city, no phone), 2 (same name and city, another phone)
    pairs = pd.DataFrame({"left_id": [0, 0, 1], "right_id": [1, 2, 2], "name": [3, 3, 3], "city": [1, 1, 1]})
    terms = {"name": np.full(3, 14.0), "city": np.full(3, 4.0), "phone": np.array([0.0, -16.0, 0.0]), "birth_date": np.array([0.0, 0.0, -16.0])}
    others = resolve.compatible_namesakes(pairs, terms, np.array([0, 1, 2]))
    assert others.tolist() == [0.0, 1.0, 1.0]
    # the same, when 1 and 2 are known to be one person: no other person at all
    assert resolve.compatible_namesakes(pairs, terms, np.array([0, 1, 1]))[0] == 0.0


@pytest.fixture(scope="module")
def rival_namesakes():
    """In each of 40 cities two people named 李娜: one signed up on the web (no phone), the other is a store member with a phone.

    A call-centre record of the web customer carries only the name, the city and a phone that is not
    the store member's: the store member is no candidate, so the web customer is the only one.
    """
    background = synthetic_customers(1500, random_state=13)
    rows = []
    for i in range(40):
        rows.append(customer(f"WL{i}", "李娜", email=f"lina{i}@example.com", birth=f"{1970 + i % 30}-05-06", city=f"Town{i}") | {"person_id": f"a{i}"})
        rows.append(customer(f"SL{i}", "李娜", phone=f"+86150{i:08d}", birth=f"{1971 + i % 30}-09-10", city=f"Town{i}", source="store") | {"person_id": f"b{i}"})
        rows.append(customer(f"CL{i}", "Li Na", phone=f"+86188{i + 5000:08d}", city=f"Town{i}", gender=None, source="call_centre") | {"person_id": f"a{i}"})
    return pd.concat([background, pd.DataFrame(rows)], ignore_index=True)


def test_a_caller_is_linked_to_the_only_namesake_who_does_not_contradict_them(rival_namesakes):
    keys = dict(zip(rival_namesakes["customer_id"], resolve.resolve_entities(rival_namesakes).keys))
    linked = sum(keys[f"CL{i}"] == keys[f"WL{i}"] for i in range(40))
    assert linked == 40, f"{linked} of 40 callers linked to their web record"
    assert all(keys[f"SL{i}"] not in (keys[f"WL{i}"], keys[f"CL{i}"]) for i in range(40)), "the store member stays apart"
