// A Node.js service using the celery-node client: reads the published schema's x-executus
// block, sends one run as it says and waits for the run's result.
// Usage: node node_sender.js SCHEMA_JSON BROKER_URL RUN_ID REQUEST_JSON -> one JSON line.
"use strict";

const fs = require("fs");
const celery = require("celery-node");

async function main() {
  const [schemaPath, broker, runId, request] = process.argv.slice(2);
  const contract = JSON.parse(fs.readFileSync(schemaPath, "utf8"))["x-executus"];
  // The queue is the client's third argument: celery-node's default, like Celery's, is
  // "celery", which no executus worker reads.
  const client = celery.createClient(broker, broker, contract.queue);
  try {
    const result = client.sendTask(contract.task, [runId, request], {}, runId);
    const value = await result.get(120000);
    console.log(JSON.stringify({ state: await result.status(), result: value }));
  } catch (err) {
    console.log(JSON.stringify({ error: String(err && err.message ? err.message : err) }));
  } finally {
    client.disconnect();
  }
}

main();
