"""Log lines of the API and the worker: logfmt or JSON, with the job id of the job at hand."""

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from worker.logs import JsonFormatter, LogfmtFormatter, job_context, setup_logging

ROOT = Path(__file__).resolve().parents[2]


def record(message="step %d", args=(3,), exc_info=None, **extra) -> logging.LogRecord:
    """A record of ``worker.tasks`` made the way ``log.info`` makes one."""
    return logging.getLogger("worker.tasks").makeRecord(
        "worker.tasks", logging.INFO, __file__, 1, message, args, exc_info, extra=extra
    )


def test_logfmt_lines_carry_the_job_id_inside_a_job_context():
    with job_context("abc"):
        line = LogfmtFormatter().format(record())
    assert line.startswith("timestamp=") and line.endswith('job_id=abc message="step 3"')
    assert " level=info logger=worker.tasks " in line
    assert "job_id=-" in LogfmtFormatter().format(record())  # outside: no job


def test_json_lines_carry_the_job_id_inside_a_job_context():
    with job_context("abc"):
        inside = json.loads(JsonFormatter().format(record()))
    outside = json.loads(JsonFormatter().format(record()))
    assert inside["job_id"] == "abc" and outside["job_id"] is None
    assert inside["message"] == "step 3" and inside["level"] == "info"
    assert inside["logger"] == "worker.tasks" and inside["timestamp"].endswith("Z")


def test_job_contexts_nest_and_end():
    with job_context("outer"):
        with job_context("inner"):
            assert "job_id=inner" in LogfmtFormatter().format(record())
        assert "job_id=outer" in LogfmtFormatter().format(record())
    assert "job_id=-" in LogfmtFormatter().format(record())


def test_a_job_id_given_as_extra_wins():
    assert json.loads(JsonFormatter().format(record(job_id="xyz")))["job_id"] == "xyz"


def test_a_traceback_stays_on_one_line():
    try:
        raise ValueError('bad "value"')
    except ValueError:
        failed = record("job failed", (), exc_info=sys.exc_info())
    line = LogfmtFormatter().format(failed)
    assert "\n" not in line and 'exception="Traceback' in line
    assert 'ValueError: bad \\"value\\""' in line
    assert "ValueError" in json.loads(JsonFormatter().format(failed))["exception"]


def test_logfmt_quotes_only_what_needs_it():
    line = LogfmtFormatter().format(record("a=b", ()))
    assert line.endswith('message="a=b"')
    assert LogfmtFormatter().format(record("done", ())).endswith("message=done")
    assert LogfmtFormatter().format(record("", ())).endswith('message=""')


@pytest.fixture
def root_logger():
    """The root logger, restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_setup_logging_replaces_its_own_handler(root_logger, monkeypatch, log_format):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    setup_logging("text")
    setup_logging(log_format)  # again: one handler of ours, the newest
    ours = [h for h in root_logger.handlers if type(h).__name__ == "_ServiceHandler"]
    assert len(ours) == 1
    with job_context("abc"):
        logging.getLogger("some.module").info("hello")
    last = stderr.getvalue().splitlines()[-1]
    if log_format == "json":
        assert json.loads(last)["job_id"] == "abc" and json.loads(last)["message"] == "hello"
    else:
        assert "logger=some.module job_id=abc message=hello" in last
    with pytest.raises(ValueError, match="log format"):
        setup_logging("xml")  # type: ignore[arg-type]


def test_a_worker_logs_through_setup_logging(tmp_path):
    """Celery's own logging set-up (as a worker starts) hands over to worker.logs."""
    script = """
import logging
from worker.celery_app import app
from worker.logs import job_context
app.log.setup(loglevel="INFO")
with job_context("job-1"):
    logging.getLogger("worker.tasks").info("training")
logging.getLogger("celery.worker").warning("no job")
"""
    env = {"PATH": "/usr/bin:/bin", "GAN_LOG_FORMAT": "json",
           "GAN_BROKER_DIR": str(tmp_path / "broker")}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(x["logger"], x["job_id"], x["message"]) for x in lines] == [
        ("worker.tasks", "job-1", "training"),
        ("celery.worker", None, "no job"),
    ]
