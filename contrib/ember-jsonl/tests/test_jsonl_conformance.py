"""ember's logger conformance suite against JSONLinesLogger: real fits (and,
in the slow tier, real processes stopped by SIGTERM and SIGKILL), read back
from metrics.jsonl."""

from __future__ import annotations

from ember_jsonl.conformance import SPEC

from ember.testing import LoggerConformance


class TestJSONLinesLogger(LoggerConformance):
    spec = SPEC
