"""The legal job transitions, each named and each one guarded statement: a job not in the
edge's prior state (or no longer at the attempt it names) is not changed, and the caller
sees no row come back. transitions.py runs them; nothing else changes a job's state.

    NEW_JOB         (new) → queued, or → errored when its build could not be planned
    CLAIM           queued → running, counting the attempt; never a job whose cancel is
                    pending (DROP_CANCELLED ends that one)
    DROP_CANCELLED  queued with a pending cancel → cancelled: an older release re-queued
                    jobs somebody had stopped
    CANCEL_QUEUED   queued → cancelled
    ASK_TO_STOP     running stays running with its cancel pending; the scheduler stops it,
                    which ends in FINISH or STOPPED
    FINISH          running → passed | failed | errored | cancelled (its current attempt)
    STOPPED         running with a pending cancel → cancelled, where it would have been
                    re-queued: a job somebody stopped is never run again
    REQUEUE         running → queued (its current attempt), after an infrastructure error

CANCEL_QUEUED and ASK_TO_STOP take `{builds}`: `?` for one build, or a SELECT of builds.
"""

NEW_JOB = (
    "INSERT INTO jobs (build_id, name, spec, state, reason, queued_at, finished_at)"
    " VALUES (?,?,?,?,?,?,?)")
CLAIM = (
    "UPDATE jobs SET state = 'running', host = ?, slot = ?, attempt = attempt + 1,"
    " started_at = ?, reason = NULL WHERE id = ? AND state = 'queued' AND cancel_requested = 0"
    " RETURNING attempt, build_id")
DROP_CANCELLED = (
    "UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_requested = 0"
    " WHERE id = ? AND state = 'queued' AND cancel_requested = 1 RETURNING build_id, reason")
CANCEL_QUEUED = (
    "UPDATE jobs SET state = 'cancelled', reason = ?, finished_at = ?"
    " WHERE state = 'queued' AND build_id IN ({builds}) RETURNING id, build_id")
ASK_TO_STOP = (
    "UPDATE jobs SET cancel_requested = 1, reason = ?"
    " WHERE state = 'running' AND cancel_requested = 0 AND build_id IN ({builds}) RETURNING id")
FINISH = (
    "UPDATE jobs SET state = ?, exit_code = ?, reason = ?, finished_at = ?, test_count = ?"
    " WHERE id = ? AND state = 'running' AND attempt = ? RETURNING build_id")
STOPPED = (
    "UPDATE jobs SET state = 'cancelled', finished_at = ?, cancel_requested = 0"
    " WHERE id = ? AND state = 'running' AND attempt = ? AND cancel_requested = 1"
    " RETURNING build_id, reason")
REQUEUE = (
    "UPDATE jobs SET state = 'queued', host = NULL, slot = NULL, reason = ?, started_at = NULL"
    " WHERE id = ? AND state = 'running' AND attempt = ? RETURNING build_id, reason")

# An attempt is begun with its CLAIM and ended with whichever edge ends it.
BEGIN_ATTEMPT = (
    "INSERT INTO attempts (job_id, number, host, slot, started_at) VALUES (?,?,?,?,?)")
END_ATTEMPT = (
    "UPDATE attempts SET finished_at = ?, outcome = ?, reason = ?, kill_pending = ?"
    " WHERE job_id = ? AND number = ?")
