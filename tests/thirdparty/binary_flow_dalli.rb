# The producer/consumer flow of tests/thirdparty/test_binary_clients.py, run by Ruby's
# dalli (3.0: the binary protocol only).  Usage: ruby binary_flow_dalli.rb HOST:PORT,HOST:PORT PREFIX
# Prints one JSON object of what the client saw; the test judges it.
require "dalli"
require "json"

first, second = ARGV[0].split(",")
prefix = ARGV[1]
OPTIONS = { socket_timeout: 5, socket_max_failures: 0 }.freeze
client = Dalli::Client.new(first, OPTIONS)
seen = {}

q = "#{prefix}_fifo"
%w[a b c].each { |v| client.set(q, v, 0, raw: true) }
seen["fifo"] = Array.new(4) { client.get(q) }

object = { "n" => 1, "list" => [1, 2, 3], "s" => "x y" }
client.set("#{prefix}_object", object)  # Marshal: dalli's serialised-value flag
seen["object"] = client.get("#{prefix}_object") == object
client.set("#{prefix}_flags", object)  # left in the queue for the test to look at

q = "#{prefix}_block"
producer = Dalli::Client.new(first, OPTIONS)
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
thread = Thread.new { sleep 0.3; producer.set(q, "late", 0, raw: true) }
value = client.get("#{q}/t=3000")
seen["blocking"] = { "value" => value, "waited_ms" => ((Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) * 1000).round }
thread.join
producer.close

q = "#{prefix}_close"
client.set(q, "x", 0, raw: true)
seen["close"] = [client.get("#{q}/open"), client.get("#{q}/close"), client.get(q)]

q = "#{prefix}_drop"
client.set(q, "y", 0, raw: true)
reader = Dalli::Client.new(first, OPTIONS)
opened = reader.get("#{q}/open")
reader.close  # the connection ends with the read open: the item goes back
seen["disconnect"] = [opened, client.get("#{q}/t=3000")]

q = "#{prefix}_abort"
client.set(q, "z", 0, raw: true)
seen["abort"] = [client.get("#{q}/open"), client.get("#{q}/abort"), client.get(q)]

q = "#{prefix}_peek"
client.set(q, "p", 0, raw: true)
seen["peek"] = [client.get("#{q}/peek"), client.get(q), client.get(q)]

client.set("#{prefix}_m1", "1", 0, raw: true)
client.set("#{prefix}_m2", "2", 0, raw: true)
seen["multi"] = client.get_multi("#{prefix}_m1", "#{prefix}_m2", "#{prefix}_m3")

q = "#{prefix}_del"
client.set(q, "d", 0, raw: true)
seen["delete"] = [client.delete(q) ? true : false, client.get(q)]

q = "#{prefix}_stat"
2.times { client.set(q, "s", 0, raw: true) }
stats = client.stats.values.first
seen["stats_items"] = stats["queue_#{q}_items"]

both = Dalli::Client.new([first, second], OPTIONS)
names = (1..20).map { |i| "#{prefix}_two#{i}" }
names.each { |name| both.set(name, name, 0, raw: true) }
seen["two_servers"] = names.map { |name| both.get(name) }
both.close

client.close
puts JSON.generate(seen)
