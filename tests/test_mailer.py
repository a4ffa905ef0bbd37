"""Mailed reports of scheduled jobs: schedule keys, SMTP settings, the message, delivery to a real local SMTP server.

The delivery tests start an aiosmtpd server on 127.0.0.1 that keeps every message it accepts, fire jobs
through a real APScheduler scheduler (``scheduler.build_scheduler``) and read ``scheduler.log.jsonl``.
"""

from __future__ import annotations

import base64
import email
import email.policy
import io
import os
import re
import socket
import threading
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path

import pandas as pd
import pytest
from aiosmtpd.controller import Controller
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler

from crm_analytics import mailer, results, scheduler

FIXTURES = Path(__file__).resolve().parent / "notebooks"
SENDER = "reports@example.com"
RECIPIENTS = ["marketing.lead@example.com", "Head of Sales <sales.head@example.com>"]


# ----------------------------------------------------------------------------- a local SMTP server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class KeepingHandler:
    """Keeps every accepted message; answers the first ``busy`` DATA commands with a 451 (try again later)."""

    def __init__(self, busy: int = 0):
        self.busy = busy
        self.messages: list[EmailMessage] = []
        self.envelopes: list[list[str]] = []

    async def handle_DATA(self, server, session, envelope):
        if self.busy > 0:
            self.busy -= 1
            return "451 4.3.0 Mailbox busy, try again later"
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default))
        self.envelopes.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(monkeypatch):
    """Start a local SMTP server (plain, no login) and point the CRM_ANALYTICS_SMTP_* settings at it."""
    handler = KeepingHandler()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    _point_settings_at(monkeypatch, port)
    try:
        yield handler
    finally:
        controller.stop()


def _point_settings_at(monkeypatch, port: int) -> None:
    for name in list(os.environ):
        if name.startswith(mailer.ENV_PREFIX) or name == mailer.SECRETS_FILE_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("CRM_ANALYTICS_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CRM_ANALYTICS_SMTP_PORT", str(port))
    monkeypatch.setenv("CRM_ANALYTICS_SMTP_FROM", SENDER)
    monkeypatch.setenv("CRM_ANALYTICS_SMTP_STARTTLS", "false")
    monkeypatch.setenv("CRM_ANALYTICS_SMTP_RETRY_DELAY_S", "0")
    monkeypatch.setenv("CRM_ANALYTICS_SMTP_TIMEOUT_S", "10")


# ----------------------------------------------------------------------------- firing a job through the scheduler


def _schedule(tmp_path: Path, job: dict, **loads) -> scheduler.ScheduleConfig:
    import yaml

    path = tmp_path / "schedule.yaml"
    path.write_text(yaml.safe_dump({"timezone": "UTC", "dataset": "demo", "jobs": [job]}), encoding="utf-8")
    return scheduler.load_schedule(path, **loads)


def fire_now(config: scheduler.ScheduleConfig, options: dict, log_path: Path) -> list[dict]:
    """Start a background scheduler for ``config``, make its one job due now, wait for it, return the log."""
    done = threading.Event()
    sched = scheduler.build_scheduler(config, scheduler_cls=BackgroundScheduler, jobstore_url="memory", log_path=log_path,
                                      runner_options=options)
    sched.add_listener(lambda event: done.set(), EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    sched.start()
    try:
        sched.modify_job(config.jobs[0].id, next_run_time=datetime.now(timezone.utc))
        assert done.wait(240), "the job did not finish"
    finally:
        sched.shutdown()
    return scheduler.RunLog(log_path).read()


def _fixture_job(tmp_path: Path, analysis: str = "ok", **mail) -> tuple[scheduler.ScheduleConfig, dict]:
    options = {"notebook_dir": str(FIXTURES), "output_root": str(tmp_path / "outputs"), "parameters_root": str(tmp_path)}
    params = tmp_path / "params.yaml"
    if analysis == "ok":
        params.write_text("label: '=HYPERLINK(\"http://example.com\")'\nas_of: '2024-01-31'\n", encoding="utf-8")
    job = {"id": f"{analysis}-mailed", "analysis": analysis, "cron": "0 7 * * *", **mail}
    if analysis == "ok":
        job["parameters"] = str(params)
    return _schedule(tmp_path, job, notebook_dir=FIXTURES, parameters_root=tmp_path), options


def _events(records: list[dict], prefix: str = "mail") -> list[str]:
    return [r["event"] for r in records if r["event"].startswith(prefix)]


def _result_status(records: list[dict]) -> str:
    return [r["status"] for r in records if r["event"] == "result"][-1]


def _attachments(message: EmailMessage) -> dict[str, bytes]:
    return {part.get_filename(): part.get_content() if isinstance(part.get_content(), bytes) else part.get_content().encode("utf-8")
            for part in message.iter_attachments()}


def _texts(message: EmailMessage) -> str:
    """Every text part (decoded) and every header of the message, attachments included."""
    chunks = [f"{key}: {value}" for key, value in message.items()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            chunks.append(part.get_content())
    return "\n".join(chunks)


# ----------------------------------------------------------------------------- the schedule's mail keys


def test_mail_keys_are_read_and_travel_to_the_job():
    config = scheduler.parse_schedule({"timezone": "UTC", "jobs": [
        {"id": "m", "analysis": "kpi", "cron": "0 7 * * *", "recipients": RECIPIENTS, "attach_tables": ["alerts", "kpi_values"],
         "on_failure": "notice"},
        {"id": "quiet", "analysis": "kpi", "cron": "0 8 * * *"},
    ]})
    mailed, quiet = config.jobs
    assert mailed.mail == mailer.MailOptions(recipients=tuple(RECIPIENTS), attach_tables=("alerts", "kpi_values"), on_failure="notice")
    assert quiet.mail is None
    kwargs = scheduler._job_kwargs(mailed, Path("log.jsonl"), {})
    assert mailer.MailOptions.from_kwargs(kwargs["mail"]) == mailed.mail
    assert scheduler._job_kwargs(quiet, Path("log.jsonl"), {})["mail"] is None


@pytest.mark.parametrize(
    ("mail", "message"),
    [
        ({"recipients": ["not-an-address"]}, r"schedule job 'm': recipient 'not-an-address' is not a valid e-mail address"),
        ({"recipients": ["ops@example"]}, r"schedule job 'm': recipient 'ops@example' is not a valid"),
        ({"recipients": ["a@example.com, b@example.com"]}, r"schedule job 'm': recipient .* is not one e-mail address"),
        ({"recipients": ["ops@example.com"], "on_failure": "shout"}, r"schedule job 'm': on_failure must be one of nothing, notice"),
        ({"attach_tables": ["alerts"]}, r"schedule job 'm': attach_tables needs a non-empty recipients list"),
        ({"recipients": ["ops@example.com"], "attach_tables": ["Alerts.csv"]}, r"schedule job 'm': attach_tables \['Alerts.csv'\]"),
    ],
)
def test_malformed_mail_keys_are_refused_naming_the_job(mail, message):
    with pytest.raises(scheduler.ScheduleError, match=message):
        scheduler.parse_schedule({"timezone": "UTC", "jobs": [{"id": "m", "analysis": "kpi", "cron": "0 7 * * *", **mail}]})


def test_smtp_settings_in_the_schedule_file_are_refused(tmp_path):
    path = tmp_path / "schedule.yaml"
    path.write_text("timezone: UTC\njobs:\n  - {id: m, analysis: kpi, cron: '0 7 * * *', recipients: [ops@example.com],\n"
                    "     smtp_host: mail.example.com, smtp_password: hunter2}\n", encoding="utf-8")
    with pytest.raises(scheduler.ScheduleError, match=r"schedule job 'm': smtp_host, smtp_password: SMTP settings .* kept in git.*"
                                                      r"CRM_ANALYTICS_SMTP_HOST.*CRM_ANALYTICS_SMTP_FILE") as caught:
        scheduler.load_schedule(path, check_jobs=False)
    assert "hunter2" not in str(caught.value)
    path.write_text("timezone: UTC\nsmtp: {host: mail.example.com, password: hunter2}\njobs: []\n", encoding="utf-8")
    with pytest.raises(scheduler.ScheduleError, match=r"schedule: smtp: SMTP settings"):
        scheduler.load_schedule(path, check_jobs=False)


def test_project_schedule_holds_no_smtp_settings():
    config = scheduler.load_schedule(check_jobs=False)
    assert all(job.mail is None or job.mail.recipients for job in config.jobs)


# ----------------------------------------------------------------------------- SMTP settings


def test_settings_come_from_the_environment_over_a_private_secrets_file(tmp_path, monkeypatch):
    secrets = tmp_path / "smtp.yaml"
    secrets.write_text("host: mail.example.com\nport: 587\nuser: reports\npassword: s3cret-pass\nfrom: reports@example.com\n")
    secrets.chmod(0o600)
    settings = mailer.load_settings({mailer.SECRETS_FILE_ENV: str(secrets)})
    assert (settings.host, settings.port, settings.user, settings.password, settings.starttls) == (
        "mail.example.com", 587, "reports", "s3cret-pass", True)
    assert "s3cret-pass" not in repr(settings)
    overridden = mailer.load_settings({mailer.SECRETS_FILE_ENV: str(secrets), "CRM_ANALYTICS_SMTP_HOST": "relay.example.com"})
    assert overridden.host == "relay.example.com" and overridden.user == "reports"
    assert mailer.load_settings({"CRM_ANALYTICS_SMTP_HOST": "h.example.com", "CRM_ANALYTICS_SMTP_FROM": SENDER,
                                 "CRM_ANALYTICS_SMTP_STARTTLS": "false"}).port == 25


def test_bad_settings_are_refused_with_the_variable_named(tmp_path):
    secrets = tmp_path / "smtp.yaml"
    secrets.write_text("host: mail.example.com\nfrom: reports@example.com\npassword: s3cret-pass\n")
    secrets.chmod(0o644)
    with pytest.raises(mailer.MailConfigError, match=r"CRM_ANALYTICS_SMTP_FILE=.*readable by others.*chmod 600"):
        mailer.load_settings({mailer.SECRETS_FILE_ENV: str(secrets)})
    inside = Path(__file__).resolve().parent.parent / "parameters" / "smtp.yaml"
    with pytest.raises(mailer.MailConfigError, match="inside the project folder"):
        mailer.load_settings({mailer.SECRETS_FILE_ENV: str(inside)})
    with pytest.raises(mailer.MailConfigError, match="CRM_ANALYTICS_SMTP_HOST and CRM_ANALYTICS_SMTP_FROM not set"):
        mailer.load_settings({})
    plain = {"CRM_ANALYTICS_SMTP_HOST": "mail.example.com", "CRM_ANALYTICS_SMTP_FROM": SENDER, "CRM_ANALYTICS_SMTP_STARTTLS": "false",
             "CRM_ANALYTICS_SMTP_PASSWORD": "s3cret-pass"}
    with pytest.raises(mailer.MailConfigError, match="password would travel unencrypted"):
        mailer.load_settings(plain)
    with pytest.raises(mailer.MailConfigError, match=r"CRM_ANALYTICS_SMTP_ATTEMPTS='50': expected a number from 1 to 10"):
        mailer.load_settings({**plain, "CRM_ANALYTICS_SMTP_STARTTLS": "true", "CRM_ANALYTICS_SMTP_ATTEMPTS": "50"})


# ----------------------------------------------------------------------------- the message's parts

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\x00" * 20
PNG_BASE64 = base64.b64encode(PNG).decode()
REPORT = f"""<!DOCTYPE html><html><head><title>r</title><style>.jp-Cell {{ color: red; }}</style>
<script src="https://cdn.example.com/require.js"></script></head>
<body class="jp-Notebook">
<main><h1 id="t">Weekly<a class="anchor-link" href="#t">¶</a></h1>
<div class="jp-InputArea-editor"><pre>results.save_table(df, "x")</pre></div>
<div data-mime-type="application/vnd.jupyter.stderr"><pre>FutureWarning: /home/analyst/x.py</pre></div>
<img alt="Revenue by week" src="data:image/png;base64,{PNG_BASE64}">
<img alt="Same chart again" src="data:image/png;base64,{PNG_BASE64}">
<img alt="Remote logo" src="https://tracker.example.com/pixel.png">
<div><style>#T_1 td {{ color: blue; }}</style><table id="T_1"><tr><td onclick="x()">A &amp; B &lt;3</td></tr></table>
<div class="table-print" style="display: none;"><table><tr><td>turned copy</td></tr></table></div></div>
<script>alert(1)</script>
</main></body></html>"""


def test_mail_html_inlines_figures_and_drops_code_scripts_and_warnings():
    made = mailer.mail_html(REPORT)
    assert len(made.images) == 1 and made.images[0].data == PNG and made.images[0].subtype == "png"
    assert made.body.count(f'src="cid:{made.images[0].cid}"') == 2 and "data:image" not in made.body
    for gone in ("save_table", "FutureWarning", "require.js", "alert(1)", "tracker.example.com", "turned copy", "¶", "onclick",
                 ".jp-Cell"):
        assert gone not in made.body
    assert "Remote logo" in made.body and "A &amp; B &lt;3" in made.body and "#T_1 td { color: blue; }" in made.body
    assert made.text == "Weekly Revenue by week Same chart again Remote logo A & B <3"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("contact z***@example.com or 138****8000", {}),
        ("revenue ¥107,523,744.40 (107523744.4), 2025-10-03 - 2025-12-31, 1681152.3 orders", {}),
        ("write to zhang.wei@example.com", {"email": 1}),
        ("call 13800138000 or +86 138-0013-8000 or 138.0013.8000", {"phone": 3}),
        ("monetary,r_score\r\n1234.869999999999,3\r\n0.5599999999,1", {}),
    ],
)
def test_unmasked_contacts_are_counted_and_masked_ones_are_not(text, found):
    assert mailer.unmasked_contacts(text, region="CN") == found


def test_attached_tables_are_masked_and_formula_safe(tmp_path):
    customers = pd.DataFrame({"customer_key": ["cus_1", "cus_2"], "full_name": ["张三丰", "Zhang Wei"],
                              "email": ["zw1987@example.com", None], "phone": ["+86 138-0013-8000", None],
                              "campaign": ['=HYPERLINK("http://example.com")', "ok"]})
    results.save_table(customers, "contacts", output_dir=tmp_path)
    text = mailer.table_csv(tmp_path, "contacts").decode("utf-8")
    table = pd.read_csv(io.StringIO(text))
    assert table["full_name"].tolist() == ["张**", "Z**** W**"] and table["email"].tolist()[0] == "z***@example.com"
    assert table["phone"].tolist()[0] == "138****8000" and table["campaign"].tolist()[0].startswith("'=HYPERLINK")
    assert "\r\n" in text and mailer.table_csv(tmp_path, "absent") is None


# ----------------------------------------------------------------------------- delivery through the scheduler


@pytest.mark.slow
def test_a_successful_run_mails_its_report_with_the_declared_tables(tmp_path, smtp_server):
    config, options = _fixture_job(tmp_path, recipients=RECIPIENTS, attach_tables=["summary", "alerts", "never_written"])
    records = fire_now(config, options, tmp_path / "scheduler.log.jsonl")
    assert _result_status(records) == "succeeded"
    assert _events(records) == ["mail_note", "mail_sent"]
    sent = records[-1]
    assert sent["attempt"] == 1 and sent["recipients"] == 2 and sent["kind"] == "report" and sent["refused"] == []
    assert "marketing.lead@example.com" not in (tmp_path / "scheduler.log.jsonl").read_text()

    [message] = smtp_server.messages
    assert smtp_server.envelopes == [["marketing.lead@example.com", "sales.head@example.com"]]
    assert message["Subject"] == "[crm-analytics] ok on demo: as of 2024-01-31"
    assert message["From"] == SENDER and message["Auto-Submitted"] == "auto-generated"
    attachments = _attachments(message)
    assert sorted(attachments) == ["alerts.csv", "summary.csv"]
    summary = pd.read_csv(io.BytesIO(attachments["summary.csv"]))
    assert summary["label"].tolist() == ["'=HYPERLINK(\"http://example.com\")"] * 3  # formula-safe
    html = message.get_body(("html",)).get_content()
    assert "A notebook that succeeds" in html and "never_written.csv not attached" in html
    assert "save_table" not in html and "import pandas" not in html  # no code
    plain = message.get_body(("plain",)).get_content()
    assert "Attached: summary.csv, alerts.csv" in plain


@pytest.mark.slow
def test_busy_server_is_retried_and_every_attempt_logged(tmp_path, smtp_server):
    smtp_server.busy = 2
    config, options = _fixture_job(tmp_path, recipients=["ops@example.com"])
    records = fire_now(config, options, tmp_path / "scheduler.log.jsonl")
    assert _events(records) == ["mail_error", "mail_error", "mail_sent"]
    errors = [r for r in records if r["event"] == "mail_error"]
    assert [e["attempt"] for e in errors] == [1, 2] and all(e["transient"] and "451" in e["error"] for e in errors)
    assert records[-1]["attempt"] == 3 and len(smtp_server.messages) == 1
    assert _result_status(records) == "succeeded"


@pytest.mark.slow
def test_unreachable_server_is_retried_a_bounded_number_of_times_and_the_run_still_succeeds(tmp_path, monkeypatch):
    _point_settings_at(monkeypatch, _free_port())  # nothing listens there: connections are refused
    monkeypatch.setenv("CRM_ANALYTICS_SMTP_ATTEMPTS", "3")
    config, options = _fixture_job(tmp_path, recipients=["ops@example.com"])
    records = fire_now(config, options, tmp_path / "scheduler.log.jsonl")
    assert _events(records) == ["mail_error", "mail_error", "mail_error", "mail_failed"]
    assert all("ConnectionRefusedError" in r["error"] for r in records if r["event"] == "mail_error")
    assert records[-1]["attempts"] == 3
    assert _result_status(records) == "succeeded"
    assert not any(r["event"] == "error" for r in records)


@pytest.mark.slow
def test_a_report_showing_a_raw_contact_is_not_sent(tmp_path, smtp_server):
    config, options = _fixture_job(tmp_path, recipients=["ops@example.com"])
    (tmp_path / "params.yaml").write_text("label: zhang.wei@example.com\n", encoding="utf-8")  # the report shows the label
    records = fire_now(config, options, tmp_path / "scheduler.log.jsonl")
    assert _events(records) == ["mail_refused"] and records[-1]["unmasked"] == {"email": 3}  # three rows show it
    assert smtp_server.messages == [] and _result_status(records) == "succeeded"


@pytest.mark.slow
@pytest.mark.parametrize("on_failure", ["nothing", "notice"])
def test_a_failed_run_sends_nothing_or_a_short_notice(tmp_path, smtp_server, on_failure):
    config, options = _fixture_job(tmp_path, analysis="fails", recipients=["ops@example.com"], on_failure=on_failure)
    records = fire_now(config, options, tmp_path / "scheduler.log.jsonl")
    assert _result_status(records) == "failed"
    if on_failure == "nothing":
        assert smtp_server.messages == [] and _events(records) == []
        return
    [notice] = smtp_server.messages
    assert notice["Subject"] == "[crm-analytics] fails on demo: run failed"
    assert not notice.is_multipart() and list(notice.iter_attachments()) == []
    body = notice.get_content()
    assert "'fails-mailed'" in body and "ValueError" in body and "boom in cell" not in body  # the message may quote data
    assert _events(records) == ["mail_sent"] and records[-1]["kind"] == "failure_notice"


@pytest.mark.slow
def test_segmentation_report_arrives_with_inline_figures_and_no_personal_data(demo_home, tmp_path, smtp_server):
    from test_no_pii_in_outputs import demo_personal_values, find_personal_values

    job = {"id": "segments-weekly", "analysis": "segmentation", "cron": "0 6 * * 1", "recipients": ["marketing.lead@example.com"],
           "attach_tables": ["segment_summary", "action_list"]}
    config = _schedule(tmp_path, job)
    records = fire_now(config, {"output_root": str(tmp_path / "outputs")}, tmp_path / "scheduler.log.jsonl")
    assert _result_status(records) == "succeeded", records
    assert _events(records) == ["mail_sent"], records
    [message] = smtp_server.messages
    subject = message["Subject"]
    assert subject.startswith("[crm-analytics] segmentation on demo: ") and "2026" in subject

    html_part = message.get_body(("html",))
    html = html_part.get_content()
    cids = set(re.findall(r'src="cid:([^"]+)"', html))
    related = {part["Content-ID"].strip().strip("<>"): part for part in message.walk() if part["Content-ID"]}
    assert cids and cids <= set(related)
    assert all(related[cid].get_content_type() == "image/png" and related[cid].get_content()[:8] == b"\x89PNG\r\n\x1a\n" for cid in cids)
    assert "data:image" not in html and "<script" not in html
    assert sorted(_attachments(message)) == ["action_list.csv", "segment_summary.csv"]
    action_list = pd.read_csv(io.BytesIO(_attachments(message)["action_list.csv"]))
    assert action_list["customer_key"].str.startswith("cus_").all()

    known = demo_personal_values()
    assert len(known.emails) > 1000 and len(known.phones) > 1000
    assert find_personal_values(_texts(message), known) == set()
