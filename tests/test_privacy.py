"""Tests of crm_analytics.privacy: keyed pseudonyms, display masks, the personal-column registry, suppression."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
import unicodedata

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as hs

from crm_analytics import paths, privacy
from crm_analytics.frames import MissingColumnError

KEY = "k" * 32


@pytest.fixture
def env_key(monkeypatch):
    monkeypatch.setenv(privacy.KEY_ENV, KEY)


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "config"


# --------------------------------------------------------------------------------------------------
# pseudonyms


def test_pseudonym_is_the_keyed_hmac_of_the_normalised_value(env_key):
    expected = "cus_" + hmac.new(KEY.encode(), b"zhang@example.com", hashlib.sha256).hexdigest()[:16]
    out = privacy.pseudonymise(pd.Series([" Zhang@Example.COM ", "zhang@example.com"]))
    assert out.tolist() == [expected, expected]


def _normalised_by_unicode_rules(value: str) -> str:
    """The normalisation spelled out for every value (NFKC, whitespace collapsed, case-folded, phones as digits)."""
    text = " ".join(unicodedata.normalize("NFKC", value).split()).casefold()
    if re.match(r"^\+?[\d\s\-().]{7,}$", text):
        return re.sub(r"^(?:0086|86)(?=1\d{10}$)", "", re.sub(r"\D", "", text))
    return text


@given(hs.text(alphabet=hs.characters(max_codepoint=127)) | hs.text())
def test_the_ascii_shortcut_normalises_as_the_unicode_rules(value):
    assert privacy._normalise_identifier(value) == _normalised_by_unicode_rules(value)


def test_pseudonym_depends_on_the_key(monkeypatch):
    values = pd.Series(["zhang@example.com"])
    monkeypatch.setenv(privacy.KEY_ENV, KEY)
    first = privacy.pseudonymise(values)[0]
    monkeypatch.setenv(privacy.KEY_ENV, "another-key-of-enough-length")
    assert privacy.pseudonymise(values)[0] != first


def test_phone_spellings_share_a_pseudonym(env_key):
    out = privacy.pseudonymise(pd.Series(["+86 138-0013-8000", "13800138000", "0086 13800138000", "（138）0013 8000"]))
    assert out.nunique() == 1


def test_pseudonyms_are_null_safe_and_keep_index_and_name(env_key):
    values = pd.Series(["a@b.com", None, np.nan, "  ", pd.NA], index=[5, 6, 7, 8, 9], name="email")
    out = privacy.pseudonymise(values)
    assert out.index.tolist() == [5, 6, 7, 8, 9] and out.name == "email" and str(out.dtype) == "string"
    assert out.isna().tolist() == [False, True, True, True, True]
    assert values.iloc[0] == "a@b.com"  # input untouched


def test_pseudonym_prefix_and_length(env_key):
    token = privacy.pseudonymise(pd.Series(["x"]), prefix="tkt", length=8)[0]
    assert token.startswith("tkt_") and len(token) == 12
    with pytest.raises(ValueError, match="length"):
        privacy.pseudonymise(pd.Series(["x"]), length=4)


def test_key_file_is_created_once_with_owner_only_permissions(config_home):
    first = privacy.pseudonymise(pd.Series(["x"]))[0]
    key_file = config_home / "crm-analytics" / "pseudonym.key"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert privacy.pseudonymise(pd.Series(["x"]))[0] == first  # stable: the file is reused


def test_key_file_readable_by_others_is_refused(config_home):
    privacy.load_key()
    os.chmod(config_home / "crm-analytics" / "pseudonym.key", 0o644)
    with pytest.raises(ValueError, match="readable by others"):
        privacy.load_key()


def test_key_file_inside_the_project_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "outputs"))
    with pytest.raises(ValueError, match="outside the repository"):
        privacy.load_key()
    assert not (tmp_path / "outputs").exists()


def test_short_key_is_refused(monkeypatch):
    monkeypatch.setenv(privacy.KEY_ENV, "short")
    with pytest.raises(ValueError, match="at least 16"):
        privacy.load_key()


def test_pseudonymise_needs_a_series(env_key):
    with pytest.raises(TypeError, match="Series"):
        privacy.pseudonymise(["a@b.com"])


def test_an_explicit_key_overrides_the_project_key(env_key):
    other = "another-key-of-enough-length"
    expected = "cus_" + hmac.new(other.encode(), b"c1", hashlib.sha256).hexdigest()[:16]
    assert privacy.pseudonymise(pd.Series(["c1"]), key=other)[0] == expected
    assert privacy.pseudonymise(pd.Series(["c1"]), key=other.encode())[0] == expected
    with pytest.raises(ValueError, match="at least 16"):
        privacy.pseudonymise(pd.Series(["c1"]), key="short")


# --------------------------------------------------------------------------------------------------
# the published customer key and the way back to source ids


def test_with_customer_key_replaces_the_id_column_or_index(env_key):
    by_column = pd.DataFrame({"score": [0.5, 0.2, 0.9], "customer_id": ["c2", "c1", "c2"]}, index=[7, 8, 9])
    keyed = privacy.with_customer_key(by_column)
    assert keyed.columns.tolist() == ["customer_key", "score"]
    assert keyed["customer_key"].tolist() == privacy.pseudonymise(pd.Series(["c2", "c1", "c2"])).tolist()
    assert keyed.index.tolist() == [0, 1, 2] and str(keyed["customer_key"].dtype) == "string"
    assert by_column.columns.tolist() == ["score", "customer_id"]  # input untouched
    by_index = by_column.set_index("customer_id")
    assert privacy.with_customer_key(by_index).equals(keyed)


def test_with_customer_key_names_a_missing_id_and_refuses_a_second_key(env_key):
    with pytest.raises(MissingColumnError, match="customer_id"):
        privacy.with_customer_key(pd.DataFrame({"score": [1.0]}))
    with pytest.raises(ValueError, match="already has"):
        privacy.with_customer_key(pd.DataFrame({"customer_id": ["c1"], "customer_key": ["x"]}))


LINEAGE = pd.DataFrame(
    {
        "source": ["crm", "shop", "shop", "crm"],
        "source_customer_id": ["CRM-7", "S-001", "S-002", "CRM-9"],
        "customer_key": ["c1", "c1", "c2", "c3"],  # the warehouse customer_id each record became
        "match_rule": ["exact_email", "exact_email", "single_record", "single_record"],
    }
)


def test_source_ids_for_maps_published_keys_back_through_the_lineage(env_key):
    published = privacy.with_customer_key(pd.DataFrame({"customer_id": ["c1", "c2"], "clv_amount": [10.0, 3.0]}))
    found = privacy.source_ids_for(published["customer_key"], LINEAGE)
    assert found.columns.tolist() == ["customer_key", "customer_id", "source", "source_customer_id"]
    by_customer = found.groupby("customer_id")["source_customer_id"].apply(sorted).to_dict()
    assert by_customer == {"c1": ["CRM-7", "S-001"], "c2": ["S-002"]}  # c3 was not asked for
    assert set(found["customer_key"]) == set(published["customer_key"])


def test_source_ids_for_needs_the_key_the_tables_were_published_with(env_key):
    other = "another-key-of-enough-length"
    published = privacy.pseudonymise(pd.Series(["c1"]), key=other)
    assert privacy.source_ids_for(published, LINEAGE).empty  # the project key does not open them
    assert privacy.source_ids_for(published, LINEAGE, key=other)["source_customer_id"].tolist() == ["CRM-7", "S-001"]
    with pytest.raises(MissingColumnError, match="source_customer_id"):
        privacy.source_ids_for(published, LINEAGE.drop(columns="source_customer_id"))


# --------------------------------------------------------------------------------------------------
# masks


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("zhang.san@example.com", "z***@example.com"),
        ("Li@Example.COM", "L***@example.com"),
        ("wang＠qq.com", "w***@qq.com"),  # full-width at sign
        ("not-an-email", "***"),
        ("@example.com", "***"),
    ],
)
def test_mask_email(raw, masked):
    assert privacy.mask_email(pd.Series([raw]))[0] == masked


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+86 138-1234-5678", "138****5678"),
        ("0086 13812345678", "138****5678"),
        ("１３８１２３４５６７８", "138****5678"),  # full-width digits
        ("010-8765 4321", "010****4321"),
        ("8765432", "***5432"),
        ("12", "***"),
    ],
)
def test_mask_phone(raw, masked):
    assert privacy.mask_phone(pd.Series([raw]))[0] == masked


@pytest.mark.parametrize(
    ("raw", "masked"),
    [("张三", "张*"), ("欧阳娜娜", "欧***"), ("Zhang Wei", "Z**** W**"), (" zhao  yun ", "z*** y**"), ("李", "李")],
)
def test_mask_name(raw, masked):
    assert privacy.mask_name(pd.Series([raw]))[0] == masked


def test_masks_are_null_safe():
    values = pd.Series([None, np.nan, pd.NA, ""], dtype="object")
    for mask in (privacy.mask_email, privacy.mask_phone, privacy.mask_name, privacy.mask_date, privacy.redact_text):
        assert mask(values).isna().all()


def test_mask_date_keeps_the_year():
    assert privacy.mask_date(pd.Series(pd.to_datetime(["1987-03-04", None]))).tolist() == ["1987", pd.NA]
    assert privacy.mask_date(pd.Series(["1990年5月1日"]))[0] == "1990"


# --------------------------------------------------------------------------------------------------
# frames


def _customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "full_name": ["张三", "Li Na"],
            "email": ["zhang@example.com", None],
            "phone": ["13812345678", "+86 139 0000 1111"],
            "birth_date": pd.to_datetime(["1987-03-04", "1990-01-01"]),
            "province": ["Guangdong", "Beijing"],
            "product_name": ["Tea", "Cup"],
            "联系地址": ["深圳市南山区", None],
            "comment": ["call me on 13812345678", "ok"],
        }
    )


def test_mask_frame_masks_registered_and_pattern_columns_only():
    df = _customers()
    before = df.copy()
    out = privacy.mask_frame(df)
    pd.testing.assert_frame_equal(df, before)
    assert out["full_name"].tolist() == ["张*", "L* N*"]
    assert out["email"].tolist() == ["z***@example.com", pd.NA]
    assert out["phone"].tolist() == ["138****5678", "139****1111"]
    assert out["birth_date"].tolist() == ["1987", "1990"]
    assert out["comment"].tolist() == [privacy.REDACTED, privacy.REDACTED]
    assert out["联系地址"].tolist() == [privacy.REDACTED, pd.NA]
    for kept in ("customer_id", "province", "product_name"):
        assert out[kept].tolist() == df[kept].tolist()
    assert list(out.columns) == list(df.columns)


def test_every_registered_column_has_a_mask():
    assert all(privacy.personal_column_kind(c) is not None for c in privacy.registered_personal_columns())


def test_mask_frame_explicit_columns_and_unknown_kind_is_redacted():
    out = privacy.mask_frame(_customers(), columns=["province"])
    assert out["province"].tolist() == [privacy.REDACTED, privacy.REDACTED]
    assert out["email"][0] == "zhang@example.com"  # only the columns asked for


def test_mask_frame_missing_column_is_named():
    with pytest.raises(MissingColumnError, match="wechat_id"):
        privacy.mask_frame(_customers(), columns=["wechat_id"])


def test_raw_values_only_when_explicitly_allowed():
    df = _customers()
    out = privacy.mask_frame(df, allow_personal_data=True)
    pd.testing.assert_frame_equal(out, df)
    assert out is not df


# --------------------------------------------------------------------------------------------------
# small groups


def _groups() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "segment": ["Champions", "Loyal", "New", "Lost"],
            "cohort_month": [1, 2, 3, 4],
            "n_customers": [120, 5, 4, None],
            "revenue_amount": [1000.0, 50.0, 40.0, 10.0],
        }
    )


def test_groups_below_k_are_suppressed_at_the_boundary():
    df = _groups()
    before = df.copy()
    out = privacy.suppress_small_groups(df, count_col="n_customers", k=5, keep_cols=["segment", "cohort_month"])
    pd.testing.assert_frame_equal(df, before)
    assert out["is_suppressed"].tolist() == [False, False, True, True]  # 5 shown, 4 and unknown hidden
    assert out["segment"].tolist() == df["segment"].tolist()
    assert out["cohort_month"].tolist() == [1, 2, 3, 4]
    assert out["revenue_amount"].isna().tolist() == [False, False, True, True]
    assert out["n_customers"].isna().tolist() == [False, False, True, True]


def test_default_keeps_only_label_columns():
    out = privacy.suppress_small_groups(_groups(), count_col="n_customers", k=10)
    assert pd.isna(out.loc[1, "cohort_month"]) and out.loc[1, "segment"] == "Loyal"


def test_nullable_counts_and_k_of_one():
    df = pd.DataFrame({"g": ["a", "b"], "n": pd.array([0, None], dtype="Int64")})
    assert privacy.suppress_small_groups(df, count_col="n", k=1)["is_suppressed"].tolist() == [True, True]


def test_suppression_arguments_are_checked():
    with pytest.raises(MissingColumnError, match="n_people"):
        privacy.suppress_small_groups(_groups(), count_col="n_people")
    with pytest.raises(ValueError, match="positive integer"):
        privacy.suppress_small_groups(_groups(), count_col="n_customers", k=0)
    with pytest.raises(ValueError, match="cannot be kept"):
        privacy.suppress_small_groups(_groups(), count_col="n_customers", keep_cols=["n_customers"])


def test_sales_owner_names_are_personal_data():
    opportunities = pd.DataFrame({"opportunity_id": ["o1", "o2"], "owner": ["王芳", "Li Lei"], "expected_amount": [1.0, 2.0]})
    assert privacy.personal_columns(opportunities) == ["owner"]
    masked = privacy.mask_frame(opportunities)
    assert not set(masked["owner"]) & {"王芳", "Li Lei"}
    assert masked["owner"].str[0].tolist() == ["王", "L"]
