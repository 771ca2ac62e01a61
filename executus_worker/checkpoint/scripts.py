"""Lua source for RedisStore. Every state transition is one script, so each is atomic.

Conventions shared by every per-run script:

- ``KEYS`` = rec, lease, ckpt, msgs, active, done, due, waiting (``RunKeys.all()``),
  ``ARGV[1]`` = run id, ``ARGV[2]`` = now (wall-clock seconds).
- Redis does not roll a script back when it errors half-way, so every check that can fail runs
  before the first write.
- Errors the store maps to typed exceptions start with ``EXECUTUS_``: ``EXECUTUS_FENCED``
  becomes ``OwnershipLost``, ``EXECUTUS_SHORT`` becomes ``TranscriptBehind`` (a
  ``CorruptCheckpointError``).

Fencing: every claim stores a random token (``fence``, chosen by the claimer) in the record and
as the lease key's value; every write of that attempt compares it. The epoch only counts claims
for people to read: after Redis loses writes (an AOF ``everysec`` crash, a failover to a lagging
replica, a restore) an epoch can be handed out twice, a random fence never is, so a stale owner
is rejected whatever Redis forgot.

Crash accounting: an attempt counts toward ``dead`` only if its process died. When a run is
taken from an owner whose lease lapsed, the taker marks the record ``tk:<old fence>``; an owner
that is still alive when it learns it was replaced (a partition, a stall, a Redis outage longer
than the lease) clears that mark with REFUND and the attempt is booked as ``survived``.
``failures = attempts - interrupts - survived``.

Redis Cluster: every script touches one run's keys plus the indexes of that run's partition,
and ``keys.py`` gives them one hash tag, so every script stays in one slot in both layouts
(global indexes and ``{run:<id>}`` on one Redis; ``{<prefix>:s<k>}`` per partition on a
cluster). RENEW touches the run's record and lease only: renewals push ``runs:due`` with a
separate ``ZADD XX GT`` per partition in the same pipeline. AUDIT touches one partition's
index keys only.
"""

from __future__ import annotations

from executus_worker.checkpoint.store import BACKLOG_DEFER_LIMIT, QUEUED_BACKOFF_DOUBLINGS

# Shared helpers, prepended to the scripts that need them.
_LIB = r"""
local unpack = unpack or table.unpack
local TERMINAL = {completed = true, failed = true, cancelled = true, dead = true}

-- nil if the caller (its claim's fence) still owns the run, else the error reply to return.
local function fence(token)
  local r = redis.call('HMGET', KEYS[1], 'status', 'fence', 'epoch')
  if r[1] ~= 'running' or r[2] ~= token then
    return redis.error_reply('EXECUTUS_FENCED run ' .. ARGV[1] .. ' is ' .. tostring(r[1]) ..
      ' at epoch ' .. tostring(r[3]) .. ' under another claim; this writer is no longer its owner')
  end
  return nil
end

-- The run is being taken from an owner whose lease lapsed: remember whose, so that owner can
-- prove it survived (REFUND) and the attempt does not count as a crash.
local function mark_taken()
  local old = redis.call('HGET', KEYS[1], 'fence')
  if old then redis.call('HSET', KEYS[1], 'tk:' .. old, ARGV[2]) end
end

-- (stored message count, nil), or (nil, error reply) when the stored state is not the one the
-- writer built on: fewer than base_len messages, or (expect non-empty) another last write than
-- the one it made. Either means Redis lost writes (a restart with AOF everysec, a failover to a
-- lagging replica, a restore) while this claim survived; the writer then rewrites everything.
local function stored_state(ckpt, base_len, expect)
  local m = redis.call('HMGET', ckpt, 'msg_count', 'wseq')
  local count = tonumber(m[1] or '0')
  if count < base_len then
    return nil, redis.error_reply('EXECUTUS_SHORT transcript has ' .. count ..
      ' messages, the writer expected at least ' .. base_len)
  end
  if expect ~= '' and m[2] ~= expect then
    return nil, redis.error_reply('EXECUTUS_SHORT the last stored write is ' ..
      tostring(m[2]) .. ', the writer made ' .. expect)
  end
  return count, nil
end

-- The transcript is one string holding a complete JSON array of compact JSON messages,
-- "[m1\n,m2\n,m3]" (compact JSON never contains a raw newline, so "\n," marks boundaries): a
-- load is one GET and one parse, with no copy. Keep the first base_len messages, then write the
-- payload: a whole array when base_len is 0, else "\n,<new...>]" written over the closing
-- bracket with SETRANGE, which costs O(payload): a save never pays for the transcript.
local function splice(msgs, base_len, count, payload)
  if base_len == 0 then
    redis.call('DEL', msgs)
    if payload ~= '' then redis.call('SET', msgs, payload) end
    return nil
  end
  local short = redis.error_reply('EXECUTUS_SHORT transcript holds fewer messages than its ' ..
    'msg_count says')
  if count > base_len then
    -- A rewritten tail (a phased resume re-runs its phase): cut after message base_len.
    -- O(transcript), but only on this rare path; plain appends never get here.
    local s = redis.call('GET', msgs) or ''
    local pos = 0
    for _ = 1, base_len do
      pos = string.find(s, '\n,', pos + 1, true)
      if not pos then return short end
    end
    redis.call('SET', msgs, string.sub(s, 1, pos - 1) .. ']')
  end
  if payload ~= '' then
    local len = redis.call('STRLEN', msgs)
    if len < 2 then return short end
    redis.call('SETRANGE', msgs, len - 1, payload)
  end
  return nil
end

-- Terminal transition: drop lease and checkpoint, put a TTL on every per-run key that stays,
-- move the id from the active and recovery indexes to the done index (trimmed to the retention
-- window). keep: the checkpoint could not be read by the finishing attempt, so it is not ours
-- to delete: it stays as stored, expiring with the record.
local function finalize(status, now, ttl, keep)
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', now, 'updated_at', now)
  redis.call('HDEL', KEYS[1], 'owner')
  if keep then
    redis.call('DEL', KEYS[2])
    redis.call('EXPIRE', KEYS[3], ttl)
  else
    redis.call('DEL', KEYS[2], KEYS[3])
  end
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[7], ARGV[1])
  redis.call('ZREM', KEYS[8], ARGV[1])
  redis.call('ZADD', KEYS[6], now, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. (tonumber(now) - ttl))
end
"""

# KEYS: the run keys [, events [, broker list]]. ARGV: run_id, now, n, n field/value args,
#   then 'e', maxlen, ttl_ms, event, ts, data_json (the enqueued event) or '-', then optionally
#   the message envelope to LPUSH   -> {1} created | {0, record}
REGISTER = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
local nfields = tonumber(ARGV[3])
-- Leftovers of an earlier run with this id whose record already expired.
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], unpack(ARGV, 4, 3 + nfields))
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
-- Queued: a recovery candidate once queued_timeout_s has passed (see REQUEUE).
redis.call('ZREM', KEYS[7], ARGV[1])
redis.call('ZADD', KEYS[8], ARGV[2], ARGV[1])
local i = 4 + nfields
if ARGV[i] == 'e' then
  -- The run's 'enqueued' event (events.py's entry format), before anyone can claim it.
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[i + 1], '*',
             'event', ARGV[i + 3], 'ts', ARGV[i + 4], 'data', ARGV[i + 5])
  redis.call('PEXPIRE', KEYS[9], ARGV[i + 2])
  i = i + 6
else
  i = i + 1
end
if ARGV[i] then
  -- The run's message, when the broker is this same Redis: registered and published in one
  -- step, so no client crash can leave a run registered and unpublished.
  redis.call('LPUSH', KEYS[10], ARGV[i])
end
return {1}
"""

# ARGV: run_id, now, owner, lease_ttl_ms, max_attempts, result_ttl_s, fence, refund_grace_s,
#       reads_format
#   -> {outcome, record} with outcome claimed | busy | gone | cancelled | dead | deferred; the
#   record is the HGETALL array (hiredis parses it in C; a cjson string of it cost the server
#   ~11 us per claim, a third of the script).
#   deferred: a worker found a checkpoint of a newer format than this claimer reads
#   (``needs_format``, written by PARK); nothing is written, the run stays as it is for a
#   worker that reads it.
CLAIM = r"""
local now, owner = ARGV[2], ARGV[3]
local r = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'interrupts', 'epoch',
  'cancel_requested', 'last_reason', 'survived', 'needs_format')
local status = r[1]
if not status or not (status == 'queued' or status == 'interrupted' or status == 'running') then
  return {'gone'}
end
local reason = r[6] or 'unknown'
if status == 'running' and redis.call('EXISTS', KEYS[2]) == 1 then return {'busy'} end
if ARGV[9] and (tonumber(r[8]) or 0) > tonumber(ARGV[9]) then
  return {'deferred', redis.call('HGETALL', KEYS[1])}
end
if status == 'running' then
  reason = 'lease expired while running (worker lost)'
  mark_taken()
end
if r[5] == '1' then
  finalize('cancelled', now, tonumber(ARGV[6]))
  return {'cancelled', redis.call('HGETALL', KEYS[1])}
end
local attempts = tonumber(r[2]) or 0
-- Clean shutdown interrupts are not failures: a long run that lives through many deploys must
-- not be declared dead; nor are attempts whose owner survived (see REFUND). Only attempts whose
-- process died count.
local failures = attempts - (tonumber(r[3]) or 0) - (tonumber(r[7]) or 0)
-- The takeover of the previous claim is not counted while its owner may still come back and
-- refund it (an outage longer than the lease: the next claim usually comes first). A dead
-- owner never refunds, so the next claim counts it: a poison run dies one attempt later.
local prev = redis.call('HGET', KEYS[1], 'fence')
if prev then
  local taken = tonumber(redis.call('HGET', KEYS[1], 'tk:' .. prev) or '')
  if taken and tonumber(now) - taken < tonumber(ARGV[8] or '0') then failures = failures - 1 end
end
if failures + 1 > tonumber(ARGV[5]) then
  redis.call('HSET', KEYS[1], 'error', 'gave up after ' .. attempts .. ' attempts: ' .. reason)
  finalize('dead', now, tonumber(ARGV[6]))
  return {'dead', redis.call('HGETALL', KEYS[1])}
end
local epoch = (tonumber(r[4]) or 0) + 1
redis.call('HSET', KEYS[1], 'status', 'running', 'epoch', epoch, 'attempts', attempts + 1,
  'owner', owner, 'fence', ARGV[7], 'started_at', now, 'updated_at', now, 'last_reason', reason)
redis.call('SET', KEYS[2], ARGV[7], 'PX', ARGV[4])
-- A recovery candidate once the lease can have expired (renewals push this later); the
-- queued-run backoff starts over.
redis.call('HDEL', KEYS[1], 'sweep_checks')
redis.call('ZREM', KEYS[8], ARGV[1])
redis.call('ZADD', KEYS[7], tonumber(now) + tonumber(ARGV[4]) / 1000, ARGV[1])
return {'claimed', redis.call('HGETALL', KEYS[1])}
"""

# KEYS: rec, lease. ARGV: fence, lease_ttl_ms -> ok | cancel | lost
RENEW = r"""
local cur = redis.call('GET', KEYS[2])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
else
  if cur then return 'lost' end
  local r = redis.call('HMGET', KEYS[1], 'status', 'fence')
  if r[1] ~= 'running' or r[2] ~= ARGV[1] then return 'lost' end
  -- Our lease lapsed (a long pause, a Redis outage) but nobody claimed the run since: the fence
  -- still guards every write, so taking the lease back is safe and spares a healthy run a
  -- restart.
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return 'cancel' end
return 'ok'
"""

# KEYS: rec, lease, due. ARGV: fence, run_id -> 1 if the lease of that claim was dropped (its
# owner is provably dead: see worker/identity.py), so the run is recoverable now rather than at
# expiry: it is also made due at once (score 0) in the recovery index.
RELEASE = r"""
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local r = redis.call('HMGET', KEYS[1], 'status', 'fence')
if r[1] ~= 'running' or r[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
return 1
"""

# KEYS: rec. ARGV: fence -> 1 if this claim's takeover was booked as a crash and is now undone.
REFUND = r"""
if redis.call('HDEL', KEYS[1], 'tk:' .. ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'survived', 1)
  return 1
end
return 0
"""

# KEYS: rec, ckpt, msgs (only these: every argument costs client time on the hot path).
# ARGV: run_id, now, fence, base_len, new_count, payload, expect_wseq, wseq,
#       changed meta field/value pairs...
#   -> new transcript length (messages) * 2 + cancel requested (0|1): the cancel flag rides on
#   the reply the run already waits for every step, so a cancel lands at the next step boundary.
SAVE = r"""
local base_len = tonumber(ARGV[4])
local r = redis.call('HMGET', KEYS[1], 'status', 'fence', 'epoch', 'cancel_requested')
if r[1] ~= 'running' or r[2] ~= ARGV[3] then
  return redis.error_reply('EXECUTUS_FENCED run ' .. ARGV[1] .. ' is ' .. tostring(r[1]) ..
    ' at epoch ' .. tostring(r[3]) .. ' under another claim; this writer is no longer its owner')
end
local count, bad = stored_state(KEYS[2], base_len, ARGV[7])
if bad then return bad end
bad = splice(KEYS[3], base_len, count, ARGV[6])
if bad then return bad end
local total = base_len + tonumber(ARGV[5])
redis.call('HSET', KEYS[2], 'msg_count', total, 'wseq', ARGV[8], unpack(ARGV, 9))
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
-- One integer, not a table: the reply is parsed on every step.
return total * 2 + (r[4] == '1' and 1 or 0)
"""

# ARGV: run_id, now, fence, base_len, new_count, payload, status, output_json, has_error,
#       error, result_ttl_s, expect_wseq, keep ('1': leave checkpoint and transcript exactly
#       as stored: the finishing attempt could not read them)
FINISH = r"""
local base_len = tonumber(ARGV[4])
local err = fence(ARGV[3])
if err then return err end
local keep = ARGV[13] == '1'
if not keep then
  local count, short = stored_state(KEYS[3], base_len, ARGV[12] or '')
  if short then return short end
  err = splice(KEYS[4], base_len, count, ARGV[6])
  if err then return err end
  -- SETRANGE grows strings greedily (up to 2x); rewrite the retained transcript at its exact
  -- size once, so a day of retention does not hold the slack. With base_len 0 splice wrote it
  -- with one SET (or deleted it): no slack, and the common one-shot run skips a GET and a SET.
  if base_len > 0 then
    local final = redis.call('GET', KEYS[4])
    if final then redis.call('SET', KEYS[4], final) end
  end
end
redis.call('HSET', KEYS[1], 'output', ARGV[8])
if ARGV[9] == '1' then
  redis.call('HSET', KEYS[1], 'error', ARGV[10])
else
  redis.call('HDEL', KEYS[1], 'error')
end
finalize(ARGV[7], ARGV[2], tonumber(ARGV[11]), keep)
-- The run's broker message, when the broker is this Redis (checkpoint/settle.py): its unacked
-- entry goes with the run's ending, so the consumer's ack needs no round trip of its own.
if KEYS[10] then
  redis.call('ZREM', KEYS[9], ARGV[14])
  redis.call('HDEL', KEYS[10], ARGV[14])
end
return 1
"""

# ARGV: run_id, now, fence[, reason[, needs_format]]
#   needs_format (PARK): the attempt found a checkpoint of a newer format; from now on only a
#   claimer that reads at least that format may claim the run (see CLAIM). Like a shutdown, a
#   park is no failure of the attempt: it never counts toward ``dead``.
INTERRUPT = r"""
local err = fence(ARGV[3])
if err then return err end
redis.call('HSET', KEYS[1], 'status', 'interrupted', 'updated_at', ARGV[2],
  'last_reason', ARGV[4] or 'interrupted (worker shutdown)')
if ARGV[5] then
  local had = tonumber(redis.call('HGET', KEYS[1], 'needs_format') or '0') or 0
  redis.call('HSET', KEYS[1], 'needs_format', math.max(had, tonumber(ARGV[5])))
  redis.call('HINCRBY', KEYS[1], 'parks', 1)
end
redis.call('HINCRBY', KEYS[1], 'interrupts', 1)
redis.call('HDEL', KEYS[1], 'owner')
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[7], ARGV[2], ARGV[1])  -- a recovery candidate at once
return 1
"""

# ARGV: run_id, now, result_ttl_s -> {'missing'} | {'ok', record}
CANCEL = r"""
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if not TERMINAL[status] then
  redis.call('HSET', KEYS[1], 'cancel_requested', 1, 'updated_at', ARGV[2])
  -- Not started, stopped cleanly, or its owner is gone (no lease): nobody will act on the
  -- flag soon, so the run ends now. A live owner sees the flag at its next lease renewal.
  if status ~= 'running' or redis.call('EXISTS', KEYS[2]) == 0 then
    finalize('cancelled', ARGV[2], tonumber(ARGV[3]))
  end
end
return {'ok', redis.call('HGETALL', KEYS[1])}
"""

# One sweep step for one due run. KEYS: rec, lease, active, due, waiting (only these: the sweep
# packs up to 2,000 calls per round trip, and every argument costs client time).
# ARGV: run_id, now, queued_timeout_s, backlogged (1 if the run's broker queue holds messages)
#   -> one string: 'requeued <previous status> <len(queue)> <queue><request json>' | 'skip'
#    | 'deferred' | 'removed <why>' | 'bad <why>'. One bulk reply, not an array: redis-py's
#   pure-Python parser costs per element, and a sweep may parse 100,000 of these.
# It decides from the record and the lease only (the index is a hint), and never reads the
# request unless it requeues the run: a skip costs a few O(1) commands whatever the request
# size. Whatever it answers, the run leaves the due range, so the sweep makes progress.
REQUEUE = r"""
local id, now, wait = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local function unindex(why)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  return 'removed ' .. why
end
-- A record this sweep cannot act on: report it now and again one queued timeout later, not on
-- every pass (a newer worker, or a person, may fix it meanwhile).
local function later(why)
  redis.call('ZREM', KEYS[5], id)
  redis.call('ZADD', KEYS[4], now + wait, id)
  return 'bad ' .. why
end
-- pcall: a record key of another type must be reported, not abort the script. The common path
-- is this one HMGET; TYPE and EXISTS are asked only when something is off.
local r = redis.pcall('HMGET', KEYS[1], 'status', 'queue', 'enqueued_at', 'sweep_checks')
if r.err then
  local kind = redis.call('TYPE', KEYS[1])
  return later('record key holds a ' .. (type(kind) == 'table' and kind.ok or tostring(kind)))
end
local status, queue = r[1], r[2]
if not status then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return unindex('indexed for recovery but has no record')
  end
  return later('record has no status')
end
if TERMINAL[status] then
  return unindex('terminal (' .. status .. ') but still indexed for recovery')
end
if not queue then return later('record has no queue') end
-- The request is read only for a run that is requeued (and before any write, so a record
-- without one is reported untouched), never for a skip.
local function request()
  return redis.call('HGET', KEYS[1], 'request')
end
local function requeued(previous, body)
  return 'requeued ' .. previous .. ' ' .. #queue .. ' ' .. queue .. body
end
local reason = nil
if status == 'running' then
  local pttl = redis.call('PTTL', KEYS[2])
  if pttl ~= -2 then
    -- Live: look again when it can first expire (its renewals push that later still). A
    -- lease without expiry is no lease we wrote; look again in one queued timeout.
    redis.call('ZREM', KEYS[5], id)
    redis.call('ZADD', KEYS[4], pttl > 0 and now + pttl / 1000 or now + wait, id)
    return 'skip'
  end
  reason = 'lease expired while running (worker lost)'
elseif status == 'queued' then
  -- The waiting score is the compare-and-set between concurrent sweeps: whoever acts on a
  -- check moves it ahead. Not indexed (an older version wrote it): start from enqueued_at.
  redis.call('ZREM', KEYS[4], id)
  local enqueued = tonumber(r[3]) or 0
  local base = tonumber(redis.call('ZSCORE', KEYS[5], id)) or enqueued
  if base > now - wait then
    redis.call('ZADD', KEYS[5], base, id)
    return 'skip'
  end
  local body = request()
  if not body then return later('record has no request') end
  local checks = (tonumber(r[4]) or 0) + 1
  local backoff = 2 ^ math.min(checks, @DOUBLINGS@) - 1
  redis.call('ZADD', KEYS[5], now + wait * backoff, id)
  redis.call('HSET', KEYS[1], 'sweep_checks', checks)
  if ARGV[4] == '1' and now - enqueued < @DEFER@ * wait then return 'deferred' end
  redis.call('HSET', KEYS[1], 'enqueued_at', ARGV[2], 'updated_at', ARGV[2])
  return requeued(status, body)
elseif status ~= 'interrupted' then
  return later('unknown status ' .. status)
end
local body = request()
if not body then return later('record has no request') end
if reason then
  mark_taken()
  redis.call('HSET', KEYS[1], 'status', 'queued', 'enqueued_at', ARGV[2], 'updated_at', ARGV[2],
    'last_reason', reason)
  redis.call('HDEL', KEYS[1], 'owner')  -- (INTERRUPT already dropped it; CLAIM, sweep_checks)
else
  redis.call('HSET', KEYS[1], 'status', 'queued', 'enqueued_at', ARGV[2], 'updated_at', ARGV[2])
end
redis.call('ZREM', KEYS[4], id)
redis.call('ZADD', KEYS[5], ARGV[2], id)
return requeued(status, body)
""".replace("@DOUBLINGS@", str(QUEUED_BACKOFF_DOUBLINGS)).replace(
    "@DEFER@", str(BACKLOG_DEFER_LIMIT)
)

# Index upkeep: the next ARGV[2] ids of runs:active (by rank, from where the last call stopped)
# that are in neither runs:due nor runs:waiting get indexed as due now. Index keys only, O(limit).
# KEYS: active, due, waiting, audit. ARGV: now, limit -> {checked, added, next rank (0: wrapped)}
AUDIT = r"""
local limit = tonumber(ARGV[2])
local start = tonumber(redis.call('GET', KEYS[4])) or 0
local ids = redis.call('ZRANGE', KEYS[1], start, start + limit - 1)
local added = 0
for _, id in ipairs(ids) do
  if not redis.call('ZSCORE', KEYS[2], id) and not redis.call('ZSCORE', KEYS[3], id) then
    redis.call('ZADD', KEYS[2], ARGV[1], id)
    added = added + 1
  end
end
local nxt = #ids < limit and 0 or start + #ids
redis.call('SET', KEYS[4], nxt)
return {#ids, added, nxt}
"""

# Scripts that use the helpers get them prepended; the rest are sent as written.
WITH_LIB = {
    "register": _LIB + REGISTER,
    "claim": _LIB + CLAIM,
    "renew": RENEW,
    "refund": REFUND,
    "release": RELEASE,
    "save": _LIB + SAVE,
    "finish": _LIB + FINISH,
    "interrupt": _LIB + INTERRUPT,
    "cancel": _LIB + CANCEL,
    "requeue": _LIB + REQUEUE,
    "audit": AUDIT,
}
