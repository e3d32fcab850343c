// The backend's database schemas as released, for the migration tests: a
// test writes a file at an old version (these statements, then its rows and
// `PRAGMA user_version`) and opens it with the current Store. Frozen: a
// released version's text never changes; a new version adds its own.
#pragma once

namespace sidetrace::backend_test {

// Version 1's events table (migration 1): the Falco fields it repeated
// (priority name, source, hostname, output) were dropped by version 2.
inline constexpr char kEventsTableV1[] = R"sql(
CREATE TABLE events (
  id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, time_ns INTEGER NOT NULL, rule TEXT NOT NULL,
  priority TEXT NOT NULL, priority_num INTEGER NOT NULL, source TEXT NOT NULL, hostname TEXT NOT NULL,
  container_id TEXT NOT NULL, task_arn TEXT NOT NULL, agent_id TEXT NOT NULL, output TEXT NOT NULL,
  json TEXT NOT NULL, received_ns INTEGER NOT NULL);
)sql";

// Versions 2 and 3's events table.
inline constexpr char kEventsTableV2[] = R"sql(
CREATE TABLE events (
  id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, time_ns INTEGER NOT NULL, rule TEXT NOT NULL,
  priority_num INTEGER NOT NULL, container_id TEXT NOT NULL, task_arn TEXT NOT NULL, agent_id TEXT NOT NULL,
  json TEXT NOT NULL, received_ns INTEGER NOT NULL);
)sql";

// The per-row indexes of versions 1-3 ...
inline constexpr char kEventIndexesV1[] = R"sql(
CREATE INDEX events_time ON events(time_ns, id);
CREATE INDEX events_rule ON events(rule, time_ns);
CREATE INDEX events_priority ON events(priority_num, time_ns);
)sql";
// ... and those of versions 1 and 2 that version 3 replaced by side tables.
inline constexpr char kContainerTaskIndexesV1[] = R"sql(
CREATE INDEX events_container ON events(container_id, time_ns);
CREATE INDEX events_task ON events(task_arn, time_ns);
)sql";

// Version 3's side tables.
inline constexpr char kSideTablesV3[] = R"sql(
CREATE TABLE events_by_container (container_id TEXT NOT NULL, time_ns INTEGER NOT NULL, id INTEGER NOT NULL,
  PRIMARY KEY (container_id, time_ns, id)) WITHOUT ROWID;
CREATE TABLE tasks (id INTEGER PRIMARY KEY, task_arn TEXT NOT NULL UNIQUE);
CREATE TABLE events_by_task (task INTEGER NOT NULL, time_ns INTEGER NOT NULL, id INTEGER NOT NULL,
  PRIMARY KEY (task, time_ns, id)) WITHOUT ROWID;
CREATE TABLE side_index_state (one INTEGER PRIMARY KEY CHECK (one = 1), indexed_to INTEGER NOT NULL);
)sql";

// Versions 1-3's agents table (version 4 moved first/last seen and
// alerts_stored to agent_activity).
inline constexpr char kAgentsTableV1[] = R"sql(
CREATE TABLE agents (
  id TEXT PRIMARY KEY, hostname TEXT NOT NULL DEFAULT '', container_id TEXT NOT NULL DEFAULT '',
  container_name TEXT NOT NULL DEFAULT '', task_arn TEXT NOT NULL DEFAULT '', cluster TEXT NOT NULL DEFAULT '',
  metadata TEXT, stats TEXT, events_seen INTEGER NOT NULL DEFAULT -1, alerts INTEGER NOT NULL DEFAULT -1,
  drops INTEGER NOT NULL DEFAULT -1, alerts_stored INTEGER NOT NULL DEFAULT 0,
  first_seen_ns INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL);
)sql";

}  // namespace sidetrace::backend_test
