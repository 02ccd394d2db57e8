// The official PocketBase JS SDK against hanzocloud base.
// Usage: BASE_URL=http://127.0.0.1:PORT/v1/base TOKEN=... MEMBER_TOKEN=... OTHER_TOKEN=...
//        node sdk_test.mjs   (TOKEN: an org owner; MEMBER_TOKEN: a member of the same org,
//        whom rules apply to; OTHER_TOKEN: someone of another org)
// Prints one JSON line per step; exits non-zero on the first failed assertion.
import assert from "node:assert/strict";
import { EventSource } from "eventsource";
import PocketBase from "pocketbase";

globalThis.EventSource = EventSource; // node 20 has no EventSource of its own

const url = process.env.BASE_URL;
const pb = new PocketBase(url);
pb.autoCancellation(false);
pb.authStore.save(process.env.TOKEN, null);
const other = new PocketBase(url);
other.autoCancellation(false);
other.authStore.save(process.env.OTHER_TOKEN, null);
const member = new PocketBase(url);
member.autoCancellation(false);
member.authStore.save(process.env.MEMBER_TOKEN, null);

const step = (name, detail = {}) => console.log(JSON.stringify({ step: name, ...detail }));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(events, n, ms = 5000) {
  const until = Date.now() + ms;
  while (events.length < n && Date.now() < until) await sleep(20);
  return events;
}

// -- collections --------------------------------------------------------------------------
const authors = await pb.collections.create({
  name: "authors",
  fields: [{ name: "name", type: "text", required: true }],
  listRule: "",
  viewRule: "",
});
const posts = await pb.collections.create({
  name: "posts",
  fields: [
    { name: "title", type: "text", required: true, unique: true },
    { name: "views", type: "number" },
    { name: "published", type: "bool" },
    { name: "author", type: "relation", collectionId: authors.id, cascadeDelete: true },
  ],
  listRule: "",
  viewRule: "",
  createRule: "@request.auth.id != ''",
  updateRule: "",
  deleteRule: "",
});
assert.equal(posts.name, "posts");
step("collections", { authors: authors.id, posts: posts.id });

// -- realtime: subscribe before writing ----------------------------------------------------
const events = [];
const unsubscribe = await pb.collection("posts").subscribe("*", (e) => {
  events.push({ action: e.action, id: e.record.id, title: e.record.title });
});
const leaked = [];
await other.collection("posts").subscribe("*", (e) => leaked.push(e)).catch(() => {});
step("subscribed", { clientId: pb.realtime.clientId });

// A subscription's headers and query options are the request its rules read.
const teamRule = "@request.headers.x_team = team || @request.query.team = team";
await pb.collections.create({
  name: "memos", fields: [{ name: "team", type: "text" }], listRule: teamRule, viewRule: teamRule,
});
const memoEvents = [];
const keep = (topic) => (e) => memoEvents.push({ topic, team: e.record.team });
const byHeader = await member.collection("memos").subscribe("*", keep("header"),
  { headers: { "X-Team": "red" } });
const byQuery = await member.collection("memos").subscribe("*", keep("query"), { query: { team: "blue" } });

// -- CRUD ----------------------------------------------------------------------------------
const ann = await pb.collection("authors").create({ name: "Ann" });
const bob = await pb.collection("authors").create({ name: "Bob" });
assert.match(ann.id, /^[a-z0-9]{15}$/);
assert.match(ann.created, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z$/);
assert.equal(ann.collectionName, "authors");

const created = [];
for (let i = 0; i < 5; i++) {
  created.push(await pb.collection("posts").create({
    title: `post ${i}`, views: i * 10, published: i % 2 === 0, author: i < 3 ? ann.id : bob.id,
  }));
}
const one = await pb.collection("posts").getOne(created[1].id, { expand: "author" });
assert.equal(one.title, "post 1");
assert.equal(one.expand.author.name, "Ann");

const updated = await pb.collection("posts").update(created[1].id, { views: 999 });
assert.equal(updated.views, 999);
assert.equal(updated.title, "post 1");
step("crud", { created: created.length });

// -- list with filter, sort, expand --------------------------------------------------------
const list = await pb.collection("posts").getList(1, 10, {
  filter: pb.filter("views >= {:min} && author.name = {:name}", { min: 10, name: "Ann" }),
  sort: "-views,title",
  expand: "author",
});
assert.deepEqual(list.items.map((p) => p.title), ["post 1", "post 2"]);
assert.equal(list.totalItems, 2);
assert.equal(list.items[0].expand.author.name, "Ann");

const full = await pb.collection("posts").getFullList({ sort: "title", fields: "id,title" });
assert.equal(full.length, 5);
assert.deepEqual(Object.keys(full[0]).sort(), ["id", "title"]);

const first = await pb.collection("posts").getFirstListItem('published = true && title ~ "4"');
assert.equal(first.title, "post 4");

// Back-relations: an author's posts, in expand and in a filter.
const writers = await pb.collection("authors").getFullList({
  filter: "posts_via_author.views ?>= 30", sort: "name", expand: "posts_via_author",
});
assert.deepEqual(writers.map((a) => a.name), ["Ann", "Bob"]);  // post 1 now has 999 views
assert.deepEqual(writers[0].expand.posts_via_author.map((p) => p.title),
  ["post 0", "post 1", "post 2"]);
assert.deepEqual(writers[1].expand.posts_via_author.map((p) => p.title), ["post 3", "post 4"]);
step("list", { items: list.items.length });

// -- errors in PocketBase's shape ----------------------------------------------------------
try {
  await pb.collection("posts").create({ title: "post 0" });
  assert.fail("duplicate title accepted");
} catch (err) {
  assert.equal(err.status, 400);
  assert.equal(err.response.data.title.code, "validation_not_unique");
}
try {
  await pb.collection("posts").getList(1, 10, { filter: "title = 'x' ) || (1=1" });
  assert.fail("bad filter accepted");
} catch (err) {
  assert.equal(err.status, 400);
  assert.ok(err.message.length > 0);
}
try {
  await pb.collection("posts").getOne("aaaaaaaaaaaaaaa");
  assert.fail("missing record found");
} catch (err) {
  assert.equal(err.status, 404);
}
step("errors");

// -- batch ---------------------------------------------------------------------------------
const batch = pb.createBatch();
batch.collection("posts").create({ title: "batch a", author: bob.id });
batch.collection("posts").update(created[0].id, { views: 5 });
const results = await batch.send();
assert.equal(results.length, 2);
assert.equal(results[0].status, 200);
assert.equal(results[0].body.title, "batch a");

const failing = pb.createBatch();
failing.collection("posts").create({ title: "batch b" });
failing.collection("posts").create({ title: "batch a" }); // duplicate: whole batch fails
await assert.rejects(failing.send(), (err) => err.status === 400);
const afterFail = await pb.collection("posts").getList(1, 1, { filter: "title = 'batch b'" });
assert.equal(afterFail.totalItems, 0);
step("batch");

// -- delete, then check the realtime events ------------------------------------------------
await pb.collection("posts").delete(created[2].id);
await waitFor(events, 9);
const actions = events.map((e) => e.action);
assert.ok(actions.filter((a) => a === "create").length >= 6, JSON.stringify(events));
assert.ok(events.some((e) => e.action === "update" && e.id === created[1].id));
assert.ok(events.some((e) => e.action === "delete" && e.id === created[2].id));
step("realtime", { events: events.length });

for (const team of ["green", "red", "blue"]) await pb.collection("memos").create({ team });
await waitFor(memoEvents, 2);
await sleep(200); // time for anything that should not come
assert.deepEqual(memoEvents.sort((a, b) => a.topic.localeCompare(b.topic)),
  [{ topic: "header", team: "red" }, { topic: "query", team: "blue" }]);
await byHeader();
await byQuery();
step("realtime options");

// -- the other org sees nothing ------------------------------------------------------------
await assert.rejects(other.collection("posts").getOne(created[0].id), (e) => e.status === 404);
await assert.rejects(other.collections.getOne("posts"), (e) => e.status === 404);
assert.equal(leaked.length, 0);
step("isolation");

await unsubscribe();
pb.realtime.unsubscribe();
other.realtime.unsubscribe();
member.realtime.unsubscribe();
step("done");
process.exit(0);
