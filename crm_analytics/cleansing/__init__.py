"""Cleansing and integration: standardise, validate, quarantine, resolve entities, report quality.

``build_clean_warehouse`` runs the whole step for one dataset: every source of its dataset
file (``parameters/datasets/<name>.yaml``) is read, standardised, validated (bad rows to quarantine, never dropped), its
customers resolved into one ``customer_key`` per person, and the canonical
tables, the lineage, the quarantine and the quality tables written to the warehouse.
"""

from crm_analytics.cleansing.pipeline import CleansingResult, QuarantineThresholdError, build_clean_warehouse
from crm_analytics.cleansing.resolve import resolve_entities
from crm_analytics.cleansing.standardise import (
    name_key,
    normalise_email,
    normalise_name,
    normalise_phone,
    parse_amount,
    parse_amounts,
    parse_datetimes,
    standardise_email,
    standardise_gender,
    standardise_name,
    standardise_phone,
    standardise_region,
    standardise_text,
)
from crm_analytics.cleansing.vocabulary import UnknownValueError

__all__ = [
    "CleansingResult",
    "QuarantineThresholdError",
    "UnknownValueError",
    "build_clean_warehouse",
    "resolve_entities",
    "name_key",
    "normalise_email",
    "normalise_name",
    "normalise_phone",
    "parse_amount",
    "parse_amounts",
    "parse_datetimes",
    "standardise_email",
    "standardise_gender",
    "standardise_name",
    "standardise_phone",
    "standardise_region",
    "standardise_text",
]
