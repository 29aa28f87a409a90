"""Answers are read no more strictly than the official client reads them: whatever shape a field
rfbatch can do without comes in, the answer parses, and well-formed values are used."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rfbatch.api.schemas import (
    FileMetadata,
    JobMetadata,
    JobStage,
    LogEntry,
    PartMetadata,
    ShardDetails,
    SignedUrlResponse,
    TaskStatus,
)
from rfbatch.transfer.signed import stated_limit

STAMP = "2026-01-01T00:00:00Z"
# Any JSON value at all: what a field may turn out to hold.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
# Unknown fields the service may add any day.
EXTRA = st.dictionaries(st.text(min_size=1, max_size=8).map(lambda k: f"x_{k}"), JSON, max_size=3)

REQUIRED: dict[type[Any], dict[str, Any]] = {
    SignedUrlResponse: {},
    JobMetadata: {"jobId": "j1", "name": "n", "createdAt": STAMP, "lastUpdate": STAMP},
    JobStage: {
        "processingStageId": "processing",
        "processingStageName": "Processing",
        "tasksNumber": 2,
        "startTimestamp": STAMP,
        "lastEventTimestamp": STAMP,
        "statusType": "info",
    },
    TaskStatus: {"taskId": "t1", "statusType": "info", "eventTimestamp": STAMP},
    LogEntry: {
        "createdAt": STAMP,
        "severity": "info",
        "reportingModule": "m",
        "logType": "t",
    },
    ShardDetails: {
        "shardId": "s1",
        "statusName": "whatever",
        "statusType": "whatever",
        "eventTimestamp": STAMP,
        "shardObjectsCount": 3,
    },
    FileMetadata: {"downloadURL": "https://h/f", "fileName": "f.json", "contentType": "x"},
    PartMetadata: {"partName": "p", "partType": "t", "contentType": "c"},
}
OPTIONAL: dict[type[Any], tuple[str, ...]] = {
    JobMetadata: (
        "jobDefinition",
        "currentStage",
        "plannedStages",
        "lastNotification",
        "restartParametersOverride",
        "status",
        "progress",
    ),
    JobStage: ("outputBatches", "notification"),
    TaskStatus: ("notification", "progress"),
    LogEntry: ("processingStageId", "taskId", "payload"),
    ShardDetails: ("statusMetadata",),
    FileMetadata: ("partName", "shardId", "nestedContentType"),
    PartMetadata: ("partDescription", "nestedContentType"),
}


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(sorted(OPTIONAL, key=lambda m: m.__name__)),
    values=st.data(),
    extra=EXTRA,
)
def test_optional_fields_of_any_shape_never_fail_an_answer(
    model: type[Any], values: st.DataObject, extra: dict[str, Any]
) -> None:
    body = dict(REQUIRED[model])
    for name in OPTIONAL[model]:
        if values.draw(st.booleans()):
            body[name] = values.draw(JSON)
    model.model_validate({**extra, **body})


@settings(max_examples=200, deadline=None)
@given(method=JSON, size=JSON, headers=JSON, extra=EXTRA)
def test_signed_url_details_of_any_shape_keep_the_url(
    method: Any, size: Any, headers: Any, extra: dict[str, Any]
) -> None:
    details = {
        **extra,
        "uploadURL": "https://storage/u?sig=1",
        "method": method,
        "maxFileSize": size,
        "extensionHeaders": headers,
    }
    signed = SignedUrlResponse.model_validate({"signedURLDetails": details}).signed_url_details
    assert signed.upload_url == "https://storage/u?sig=1"
    assert signed.method in ("PUT", "POST", "PATCH")
    # A size is used when it is a whole positive number of bytes, and ignored otherwise: a
    # limit of true, 0 or -5 would fail every file as too large.
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        assert signed.max_file_size == size
    else:
        assert signed.max_file_size is None
    limit = stated_limit(signed)
    assert limit is None or limit > 0
    assert isinstance(signed.extension_headers, dict)


def test_a_length_range_of_nothing_states_no_limit() -> None:
    for headers, expected in (
        ({"x-goog-content-length-range": "0,0"}, None),
        ({"x-goog-content-length-range": "0,1048576"}, 1048576),
        ({"x-goog-content-length-range": "garbage"}, None),
    ):
        details = {"uploadURL": "https://s/u", "extensionHeaders": headers, "maxFileSize": True}
        signed = SignedUrlResponse.model_validate({"signedURLDetails": details}).signed_url_details
        assert stated_limit(signed) == expected


def test_well_formed_values_are_used() -> None:
    details = {"uploadURL": "https://s/u", "method": "post", "maxFileSize": 1024, "x": 1}
    signed = SignedUrlResponse.model_validate({"signedURLDetails": details}).signed_url_details
    assert (signed.method, signed.max_file_size) == ("POST", 1024)
    job = JobMetadata.model_validate(
        {**REQUIRED[JobMetadata], "status": "completed", "progress": "half", "isTerminal": True}
    )
    assert (job.status, job.progress, job.terminal) == ("completed", None, True)
    log = LogEntry.model_validate({**REQUIRED[LogEntry], "severity": "catastrophic"})
    assert log.severity == "catastrophic"
    # A number where text is expected is taken as text.
    part = PartMetadata.model_validate({"partName": 7, "partType": "t", "contentType": "c"})
    assert part.part_name == "7"
