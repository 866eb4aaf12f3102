// The producer/consumer flow of tests/thirdparty/test_binary_clients.py, run by Node's
// memjs (the binary protocol only).  Usage: node binary_flow_memjs.js HOST:PORT,HOST:PORT PREFIX
// with memjs on NODE_PATH.  Prints one JSON object of what the client saw; the test judges it.
const memjs = require("memjs");

const [first, second] = process.argv[2].split(",");
const prefix = process.argv[3];
const JSON_FLAG = 2;  // this flow's flag for a JSON-serialised value

// memjs leaves flags to a serializer: this one marks JSON values with JSON_FLAG.
const serializer = {
  serialize(opcode, value, extras) {
    if (typeof value !== "string") {
      value = JSON.stringify(value);
      extras.writeUInt32BE(JSON_FLAG, 0);
    }
    return { value, extras };
  },
  deserialize(opcode, value, extras) {
    const text = value === null ? null : value.toString();
    const flags = extras ? extras.readUInt32BE(0) : 0;
    return { value: flags === JSON_FLAG ? JSON.parse(text) : text, extras: flags };
  },
};
const OPTIONS = { timeout: 5, retries: 0, serializer, logger: { log() {} } };
const connect = (servers) => memjs.Client.create(servers, OPTIONS);
const get = async (client, key) => (await client.get(key)).value;
const set = (client, key, value) => client.set(key, value, { expires: 0 });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const client = connect(first);
  const seen = {};

  let q = `${prefix}_fifo`;
  for (const v of ["a", "b", "c"]) await set(client, q, v);
  seen.fifo = [];
  for (let i = 0; i < 4; i++) seen.fifo.push(await get(client, q));

  const object = { n: 1, list: [1, 2, 3], s: "x y" };
  await set(client, `${prefix}_object`, object);
  seen.object = JSON.stringify(await get(client, `${prefix}_object`)) === JSON.stringify(object);
  await set(client, `${prefix}_flags`, object);  // left in the queue for the test to look at

  q = `${prefix}_block`;
  const producer = connect(first);
  const started = Date.now();
  const late = sleep(300).then(() => set(producer, q, "late"));
  const value = await get(client, `${q}/t=3000`);
  seen.blocking = { value, waited_ms: Date.now() - started };
  await late;
  producer.close();

  q = `${prefix}_close`;
  await set(client, q, "x");
  seen.close = [await get(client, `${q}/open`), await get(client, `${q}/close`), await get(client, q)];

  q = `${prefix}_drop`;
  await set(client, q, "y");
  const reader = connect(first);
  const opened = await get(reader, `${q}/open`);
  reader.close();  // the connection ends with the read open: the item goes back
  seen.disconnect = [opened, await get(client, `${q}/t=3000`)];

  q = `${prefix}_abort`;
  await set(client, q, "z");
  seen.abort = [await get(client, `${q}/open`), await get(client, `${q}/abort`), await get(client, q)];

  q = `${prefix}_peek`;
  await set(client, q, "p");
  seen.peek = [await get(client, `${q}/peek`), await get(client, q), await get(client, q)];

  // memjs has no multi-get: the gets go out together, pipelined on one connection.
  await set(client, `${prefix}_m1`, "1");
  await set(client, `${prefix}_m2`, "2");
  const keys = [`${prefix}_m1`, `${prefix}_m2`, `${prefix}_m3`];
  const values = await Promise.all(keys.map((key) => get(client, key)));
  seen.multi = {};
  keys.forEach((key, i) => { if (values[i] !== null) seen.multi[key] = values[i]; });

  q = `${prefix}_del`;
  await set(client, q, "d");
  seen.delete = [await client.delete(q), await get(client, q)];

  q = `${prefix}_stat`;
  await set(client, q, "s");
  await set(client, q, "s");
  const stats = await new Promise((resolve, reject) =>
    client.stats((err, server, fields) => (err ? reject(err) : resolve(fields))));
  seen.stats_items = stats[`queue_${q}_items`];

  const both = connect(`${first},${second}`);
  const names = Array.from({ length: 20 }, (_, i) => `${prefix}_two${i + 1}`);
  for (const name of names) await set(both, name, name);
  seen.two_servers = [];
  for (const name of names) seen.two_servers.push(await get(both, name));
  both.close();

  client.close();
  console.log(JSON.stringify(seen));
}

main().catch((err) => { console.error(err); process.exit(1); });
