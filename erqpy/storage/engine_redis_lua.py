"""The Lua scripts of the Redis backend: every change to a queue is one of them, so it is
atomic on the Redis server that owns the queue's hash slot.

Keys of queue ``N`` whose master is ``T`` (``T = N`` for a queue that is no fanout child)
all start with ``<prefix>:{T}:``; Redis hashes only what is inside the braces, so a
master and its children share one slot and a fanout ``set`` is one script.  The keys
(``QueueKeys`` in engine_redis_queue.py builds them):

* ``items:N``      list, the waiting items, head first, each ``"<id> <flags> <added_ms>
  <expires_ms> <deliveries>\\n" + data`` (deliveries: how often it was opened)
* ``meta:N``       hash: ``next_id`` (the last id given), ``bytes`` (payload bytes
  waiting), the limits the scripts enforce (written from the node's config), ``paused``,
  and the stats counters of PROTOCOL.md
* ``open:NODE:N``  sorted set of the open reads that node ``NODE`` holds: each item
  scored by its id (exact: ids stay far below 2^53), so a confirm is a removal by score
  and the reaper takes the newest ``batch`` in O(log n + batch)
* ``staged:NODE:N`` list, the items node ``NODE`` moved off the head with ``BLMOVE`` for
  its blocked readers (engine_redis_staging.py), oldest first; still counted in ``bytes``.
  TAKE takes from it before the head; the reaper gives a dead node's back to the head
* ``opennodes:N``  set of the nodes with open reads of ``N`` (for delete and the reaper)
* ``children:T``   set of the fanout children of ``T``

Scripts build the keys of fanout children from ``children:T`` instead of receiving them
in KEYS; they are in the slot of KEYS[1] by construction (the hash tag), which Redis 7.0
and Valkey both execute.  Only commands the two share are used; numbers cross into Lua
as strings and go back out through ``string.format("%d")`` where they could be large.
"""

PRELUDE = r"""
local function parse(v)
  local id, flags, added, expires, deliveries, start =
    string.match(v, "^(%d+) (%d+) (%d+) (%d+) (%d+)\n()")
  return tonumber(id), tonumber(flags), tonumber(added), tonumber(expires), start, tonumber(deliveries)
end
local function size_of(v)
  local _, _, _, _, start = parse(v)
  return #v - start + 1
end
local function num(value)
  return tonumber(value or "0") or 0
end
-- The payload bytes of a queue go up or down by `delta`.  Formatted, because Lua writes
-- minus zero (an empty item taken) as "-0", which HINCRBY refuses as not an integer.
local function add_bytes(meta, delta)
  redis.call("HINCRBY", meta, "bytes", string.format("%d", delta))
end
-- Drop expired items at the head of `items`, at most `limit`; returns them (oldest first).
local function expire_head(items, meta, now, limit)
  local max_age = num(redis.call("HGET", meta, "max_age_ms"))
  local gone = {}
  while #gone < limit do
    local head = redis.call("LINDEX", items, 0)
    if not head then break end
    local _, _, added, expires = parse(head)
    local expired = (expires > 0 and expires <= now) or (max_age > 0 and added + max_age <= now)
    if not expired then break end
    redis.call("LPOP", items)
    add_bytes(meta, -size_of(head))
    gone[#gone + 1] = head
  end
  if #gone > 0 then redis.call("HINCRBY", meta, "expired_items", #gone) end
  return gone
end
-- Staged items back to the head of `items`, in their order (they were heads); dropped
-- when the queue is gone.  Returns how many moved.
local function unstage(staged, items, meta)
  if redis.call("EXISTS", meta) == 0 then
    redis.call("DEL", staged)
    return 0
  end
  local moved = 0
  while true do
    local item = redis.call("RPOP", staged)
    if not item then break end
    redis.call("LPUSH", items, item)
    moved = moved + 1
  end
  return moved
end
"""

#: KEYS: meta of the target, children of its master.  ARGV: key base ("<prefix>:{T}:"),
#: name, data, flags, expires_ms, now, fanout ("1": the children get it too).
#: Returns {master result, then child name, its item id, for each child that stored it};
#: the master result is the new
#: item's id, 0 refused (limits), -1 no such queue (deleted), -2 fanout_only accepted.
PUT = PRELUDE + r"""
local base, name, data = ARGV[1], ARGV[2], ARGV[3]
local flags, expires, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

local function add(queue)
  local meta = base .. "meta:" .. queue
  if redis.call("EXISTS", meta) == 0 then return -1 end
  local cfg = redis.call("HMGET", meta, "max_items", "max_size", "max_item_size", "discard_old",
                         "max_age_ms", "bytes")
  local max_items, max_size, max_item_size = num(cfg[1]), num(cfg[2]), num(cfg[3])
  local discard_old, max_age, bytes = cfg[4] == "1", num(cfg[5]), num(cfg[6])
  local size = #data
  if size > max_item_size then return 0 end
  local items = base .. "items:" .. queue
  local full = redis.call("LLEN", items) >= max_items or bytes + size > max_size
  if full and (not discard_old or size > max_size) then return 0 end
  local item_expires = expires
  if max_age > 0 and (item_expires == 0 or item_expires > now + max_age) then
    item_expires = now + max_age
  end
  local id = redis.call("HINCRBY", meta, "next_id", 1)
  redis.call("RPUSH", items, string.format("%d %d %d %d 0\n", id, flags, now, item_expires) .. data)
  add_bytes(meta, size)
  redis.call("HINCRBY", meta, "total_items", 1)
  redis.call("HINCRBY", meta, "puts", 1)
  if full then
    -- discard_old_when_full: drop heads until within the limits; never the new item.
    local discarded = 0
    while true do
      local count = redis.call("LLEN", items)
      bytes = num(redis.call("HGET", meta, "bytes"))
      if count <= 1 or not (count > max_items or bytes > max_size) then break end
      add_bytes(meta, -size_of(redis.call("LPOP", items)))
      discarded = discarded + 1
    end
    if discarded > 0 then redis.call("HINCRBY", meta, "discarded", discarded) end
  end
  return id
end

-- A deleted master feeds no child: the caller creates it again and retries.
if redis.call("EXISTS", KEYS[1]) == 0 then return {-1} end
local result = {0}
if ARGV[7] == "1" then
  for _, child in ipairs(redis.call("SMEMBERS", KEYS[2])) do
    local id = add(child)
    if id > 0 then
      result[#result + 1] = child
      result[#result + 1] = id
    end
  end
  if redis.call("HGET", KEYS[1], "fanout_only") == "1" then
    if #data <= num(redis.call("HGET", KEYS[1], "max_item_size")) then result[1] = -2 end
    return result
  end
end
result[1] = add(name)
return result
"""

#: KEYS: items, meta, open reads of this node, opennodes, staged of this node.  ARGV: now, mode ("take",
#: "open", "peek" or "expire"), node, the most expired items to drop in this call,
#: max_deliveries (0: no limit).  Returns {item or false, expired items, 1 when more
#: expired items may wait, the head when it was opened max_deliveries times: the caller
#: moves it to the dead-letter queue (another slot), then runs DROP_HEAD}.
TAKE = PRELUDE + r"""
local items, meta = KEYS[1], KEYS[2]
local now, mode, limit = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[4])
local max_deliveries = tonumber(ARGV[5])
local staged = KEYS[5]
local gone = expire_head(staged, meta, now, limit)
for _, item in ipairs(expire_head(items, meta, now, limit - #gone)) do gone[#gone + 1] = item end
if #gone >= limit then return {false, gone, 1} end
-- What this node staged for its blocked readers was the head when it was staged.
if redis.call("LLEN", staged) > 0 then items = staged end
if max_deliveries > 0 and mode ~= "expire" then
  local first = redis.call("LINDEX", items, 0)
  if first then
    local _, _, _, _, _, deliveries = parse(first)
    if deliveries >= max_deliveries then return {false, gone, 0, first} end
  end
end
local head = false
if mode == "peek" then
  head = redis.call("LINDEX", items, 0) or false
elseif mode ~= "expire" then
  head = redis.call("LPOP", items) or false
  if head then
    local id, _, added = parse(head)
    add_bytes(meta, -size_of(head))
    redis.call("HINCRBY", meta, "gets", 1)
    redis.call("HSET", meta, "last_age_ms", string.format("%d", now - added))
    if mode == "open" then
      local _, flags, _, expires, start, deliveries = parse(head)
      head = string.format("%d %d %d %d %d\n", id, flags, added, expires, deliveries + 1)
        .. string.sub(head, start)
      redis.call("ZADD", KEYS[3], string.format("%d", id), head)
      redis.call("SADD", KEYS[4], ARGV[3])
      redis.call("HINCRBY", meta, "transactions", 1)
    end
  end
end
return {head, gone, 0}
"""

#: KEYS: items, meta, staged of this node.  ARGV: the head as TAKE returned it.  Removes
#: it when it is still the head of one of the two lists (another node may have moved it
#: already); returns 1 or 0.
DROP_HEAD = PRELUDE + r"""
local source = KEYS[3]
if redis.call("LINDEX", source, 0) ~= ARGV[1] then source = KEYS[1] end
if redis.call("LINDEX", source, 0) ~= ARGV[1] then return 0 end
redis.call("LPOP", source)
add_bytes(KEYS[2], -size_of(ARGV[1]))
redis.call("HINCRBY", KEYS[2], "dead_lettered", 1)
return 1
"""

#: KEYS: open reads of the node, opennodes.  ARGV: item id, node.  Returns 1 or 0.
CONFIRM = r"""
local removed = redis.call("ZREMRANGEBYSCORE", KEYS[1], ARGV[1], ARGV[1])
if removed == 1 and redis.call("ZCARD", KEYS[1]) == 0 then redis.call("SREM", KEYS[2], ARGV[2]) end
return removed
"""

#: KEYS: open reads of the node, opennodes, items, meta, staged of the node.  ARGV:
#: node, batch size, then item ids (newest first).  Without ids: the node's staged items,
#: then the ``batch size`` newest open items of that node (the reaper; staged items are
#: newer than any open read, and batches go newest first, so the oldest ends at the
#: head).  Every item given back goes to the head.  Returns {items given back, open
#: items left}.
GIVE_BACK = PRELUDE + r"""
local open, opennodes, items, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local unstaged = 0
if #ARGV == 2 then unstaged = unstage(KEYS[5], items, meta) end
local taken = {}  -- the items to give back, newest first
if #ARGV > 2 then
  for i = 3, #ARGV do
    local found = redis.call("ZRANGE", open, ARGV[i], ARGV[i], "BYSCORE")
    if found[1] then
      redis.call("ZREMRANGEBYSCORE", open, ARGV[i], ARGV[i])
      taken[#taken + 1] = found[1]
    end
  end
else
  local newest = redis.call("ZRANGE", open, -tonumber(ARGV[2]), -1)
  for i = #newest, 1, -1 do taken[#taken + 1] = newest[i] end
  if #newest > 0 then redis.call("ZREMRANGEBYRANK", open, -#newest, -1) end
end
local given = 0
if redis.call("EXISTS", meta) == 1 then
  for _, item in ipairs(taken) do
    redis.call("LPUSH", items, item)
    add_bytes(meta, size_of(item))
  end
  given = #taken
end
if given > 0 then redis.call("HINCRBY", meta, "canceled_transactions", given) end
local left = redis.call("ZCARD", open)
if left == 0 then redis.call("SREM", opennodes, ARGV[1]) end
return {given + unstaged, left}
"""

#: KEYS: staged of this node, items, meta.  Returns how many staged items went back to
#: the head (a blocked reader left, or the node stops).
UNSTAGE = PRELUDE + r"""
return unstage(KEYS[1], KEYS[2], KEYS[3])
"""

#: KEYS: items, meta, staged of this node.  Returns how many items were dropped.
FLUSH = r"""
local count = redis.call("LLEN", KEYS[1]) + redis.call("LLEN", KEYS[3])
redis.call("DEL", KEYS[1], KEYS[3])
if redis.call("EXISTS", KEYS[2]) == 1 then
  redis.call("HSET", KEYS[2], "bytes", 0)
  redis.call("HINCRBY", KEYS[2], "total_flushes", 1)
end
return count
"""

#: KEYS: meta, children of the master.  ARGV: name, is a child ("1"), the master's
#: max_fanout_children, created_ms, then field/value pairs of the limits.
#: Returns 1 (exists now) or 0 (the master has max_fanout_children already).
CREATE = r"""
local meta, children, name = KEYS[1], KEYS[2], ARGV[1]
if ARGV[2] == "1" and redis.call("SISMEMBER", children, name) == 0 then
  if redis.call("SCARD", children) >= tonumber(ARGV[3]) then return 0 end
  redis.call("SADD", children, name)
end
redis.call("HSETNX", meta, "next_id", 0)
redis.call("HSETNX", meta, "bytes", 0)
redis.call("HSETNX", meta, "created_ms", ARGV[4])
local limits = {}
for i = 5, #ARGV do limits[#limits + 1] = ARGV[i] end
if #limits > 0 then redis.call("HSET", meta, unpack(limits)) end
return 1
"""

#: KEYS: items, meta, opennodes, children of the master, staged of this node.  ARGV:
#: key base, name, is a child ("1").  Returns 1 when the queue existed.  (Another node's
#: staged items of it are dropped by that node's stager, which finds the queue gone.)
DELETE = r"""
local base, name = ARGV[1], ARGV[2]
redis.call("DEL", KEYS[5])
for _, node in ipairs(redis.call("SMEMBERS", KEYS[3])) do
  redis.call("DEL", base .. "open:" .. node .. ":" .. name)
end
local existed = redis.call("EXISTS", KEYS[2])
redis.call("DEL", KEYS[1], KEYS[2], KEYS[3])
if ARGV[3] == "1" then redis.call("SREM", KEYS[4], name) end
return existed
"""

class Scripts:
    """The scripts registered on one client; each call is EVALSHA, and redis-py loads the
    script and retries when the server answers NOSCRIPT (a restart, a failover, SCRIPT
    FLUSH)."""

    def __init__(self, client):
        self.put = client.register_script(PUT)
        self.take = client.register_script(TAKE)
        self.confirm = client.register_script(CONFIRM)
        self.give_back = client.register_script(GIVE_BACK)
        self.flush = client.register_script(FLUSH)
        self.create = client.register_script(CREATE)
        self.delete = client.register_script(DELETE)
        self.drop_head = client.register_script(DROP_HEAD)
        self.unstage = client.register_script(UNSTAGE)
