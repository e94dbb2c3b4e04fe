"""The entry point of a trial process that NNI's manager starts: train one queued trial.

NNI imports `train_in_trial_process` by name in the trial process, so it stays a module-level function. The trial
stores its result in the database, where the search reads it when NNI says the trial ended; nothing is reported
to NNI.
"""

from __future__ import annotations

from typing import Any

from nas.search.study import train_queued_trial


def entry_arguments(db_url: str, search_id: int) -> dict[str, Any]:
    """The keyword arguments NNI passes to every trial of a search."""
    # NNI's messages go through json_tricks, which takes a "//" (as in every database URL) three levels deep for
    # a comment and breaks the message: the URL travels hex-encoded.
    return {"db_url_hex": db_url.encode().hex(), "search_id": search_id}


def train_in_trial_process(sample: dict[str, Any], db_url_hex: str, search_id: int, role: str) -> None:
    db_url = bytes.fromhex(db_url_hex).decode()
    train_queued_trial(db_url, search_id, sample, role)
