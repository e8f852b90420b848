// PgStore: shared buckets in one PostgreSQL table, decided in batched FOR UPDATE transactions.
#include "sidecar/pg/pg_store.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <random>

#include "sidecar/core/shared_bucket.h"
#include "sidecar/log/log.h"
#include "sidecar/pg/table_sql.h"

namespace ratelimit {
namespace {

constexpr uint64_t kMinBackoffMs = 100;
constexpr uint64_t kMaxBackoffMs = 1000;

// SQL array literals of values that need no quoting (hex strings and numbers).
std::string ArrayLiteral(const std::vector<std::string>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += items[i];
  }
  return out + "}";
}

std::string DoubleText(double v) {
  char buf[40];
  snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

std::optional<int64_t> IntField(PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return std::nullopt;
  return std::strtoll(PQgetvalue(r, row, col), nullptr, 10);
}

std::optional<double> DoubleField(PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return std::nullopt;
  return std::strtod(PQgetvalue(r, row, col), nullptr);  // Reads NaN and Infinity too.
}

// SQLSTATEs of a transaction that say the table itself is not usable any more: dropped
// (undefined_table, or its schema: invalid_schema_name), replaced by another shape
// (undefined_column), or no longer ours to use (insufficient_privilege). Worth checking, and
// creating, the table again rather than failing every transaction until an operator looks.
bool TableUnusable(std::string_view sqlstate) {
  return sqlstate == "42P01" || sqlstate == "3F000" || sqlstate == "42703" || sqlstate == "42501";
}

}  // namespace

struct PgStore::Slot {
  PgStore* store = nullptr;
  std::unique_ptr<PgSession> session;
  bool in_tx = false;
  uv_timer_t timer;          // Reconnects and table retries.
  uv_timer_t deadline;       // The timeout of what the session is doing now...
  uint64_t deadline_ms = 0;  // ...and its length.
  uint64_t backoff_ms = 0;
  bool connected = false;  // Since the last connect, until the session breaks.
  bool logged_down = false;
};

struct PgStore::Transaction {
  std::vector<StoreOp> batch;
  TakeDone done;
  std::vector<std::string> keys;  // Distinct row keys (hex), sorted: the locking order.
  // For each of `keys`, the positions of its checks in `batch`, in batch order.
  std::vector<std::vector<size_t>> positions;
  uint64_t started_ns = 0;  // uv_hrtime() at BEGIN.
};

PgStore::PgStore(uv_loop_t* loop, PgStoreOptions options)
    : loop_(loop), options_(std::move(options)), table_sql_(options_.table.Quoted()) {
  for (size_t i = 0; i < std::max<size_t>(1, options_.connections); ++i) {
    auto slot = std::make_unique<Slot>();
    slot->store = this;
    Slot* raw = slot.get();
    slot->session = std::make_unique<PgSession>(loop_, options_.conninfo,
                                                [this, raw](PgSession&) { OnSessionState(*raw); });
    uv_timer_init(loop_, &slot->timer);
    slot->timer.data = raw;
    uv_timer_init(loop_, &slot->deadline);
    slot->deadline.data = raw;
    open_timers_ += 2;
    slots_.push_back(std::move(slot));
  }
  uv_timer_init(loop_, &gc_timer_);
  gc_timer_.data = this;
  ++open_timers_;
}

PgStore::~PgStore() = default;

void PgStore::Start() {
  for (auto& slot : slots_) Connect(*slot);
  uv_timer_start(&gc_timer_, &GcTrampoline, kGcIntervalMs, kGcIntervalMs);
}

void PgStore::Connect(Slot& slot) {
  StartDeadline(slot, std::max<uint64_t>(options_.timeout_ms, kMinConnectTimeoutMs));
  slot.session->Connect();
}

void PgStore::StartDeadline(Slot& slot, uint64_t ms) {
  slot.deadline_ms = ms;
  uv_timer_start(
      &slot.deadline,
      [](uv_timer_t* timer) {
        auto* s = static_cast<Slot*>(timer->data);
        if (s->store->shutting_down_) return;
        s->session->Abandon("no answer within " + std::to_string(s->deadline_ms) +
                            " ms (RATE_LIMIT_PG_TIMEOUT_MS)");
      },
      ms, 0);
}

void PgStore::StopDeadline(Slot& slot) { uv_timer_stop(&slot.deadline); }

void PgStore::GcTrampoline(uv_timer_t* timer) {
  static_cast<PgStore*>(timer->data)->CollectGarbage();
}

void PgStore::CollectGarbage() {
  if (!table_ready_ || shutting_down_ || collecting_) return;
  Slot* slot = nullptr;
  for (auto& s : slots_) {
    if (s->session->state() == PgSession::State::kIdle && !s->in_tx) slot = s.get();
  }
  if (slot == nullptr) return;  // Busy with checks: they come first; try again next tick.
  collecting_ = true;
  slot->in_tx = true;
  // Full at clock_timestamp(): the refill since updated_at covers what was missing. Only rows
  // untouched for a whole window (and at least a second): a busy key with a large limit is
  // full again within microseconds, and deleting its row between a check's INSERT and its
  // SELECT would fail that check. Malformed rows are left to RepairRow when next used.
  PgQuery query{"DELETE FROM " + table_sql_ + " WHERE key IN (SELECT key FROM " + table_sql_ +
                    " WHERE capacity > 0 AND window_ms > 0 AND tokens >= 0"
                    " AND updated_at <= clock_timestamp()"
                    "   - greatest(window_ms, 1000) * interval '1 millisecond'"
                    " AND tokens + extract(epoch FROM clock_timestamp() - updated_at) * 1000"
                    " * capacity / window_ms >= capacity"
                    " LIMIT " +
                    std::to_string(kGcBatch) + " FOR UPDATE SKIP LOCKED)",
                {}};
  // A scan of the whole table (no index on what every check updates): background work, with
  // a deadline of its own rather than the checks'.
  StartDeadline(*slot, std::max<uint64_t>(options_.timeout_ms, kBackgroundTimeoutMs));
  slot->session->Run({std::move(query)}, [this, slot](Result<std::vector<PgResultPtr>> r) {
    StopDeadline(*slot);
    collecting_ = false;
    slot->in_tx = false;
    NotifyCapacity();
    if (!r.ok()) {
      Log(LogLevel::kDebug, "garbage collection failed").Str("error", r.status().message());
      return;
    }
    const char* tuples = PQcmdTuples((*r)[0].get());
    const uint64_t deleted = std::strtoull(tuples, nullptr, 10);
    metrics_.collected_rows.Add(deleted);
    if (deleted == static_cast<uint64_t>(kGcBatch))
      uv_timer_start(&gc_timer_, &GcTrampoline, 0, kGcIntervalMs);
  });
}

size_t PgStore::free_slots() const {
  if (!table_ready_ || shutting_down_) return 0;
  size_t n = 0;
  for (const auto& slot : slots_) {
    n += slot->session->state() == PgSession::State::kIdle && !slot->in_tx ? 1 : 0;
  }
  if (breaker_.state() == CircuitBreaker::State::kClosed) return n;
  return breaker_.Admits(uv_now(loop_)) ? std::min<size_t>(n, 1) : 0;  // One probe.
}

bool PgStore::ready() const {
  return table_ready_ && free_or_busy_sessions() > 0 && breaker_.Admits(uv_now(loop_));
}

size_t PgStore::free_or_busy_sessions() const {
  size_t n = 0;
  for (const auto& slot : slots_) {
    const PgSession::State s = slot->session->state();
    n += s == PgSession::State::kIdle || s == PgSession::State::kBusy ? 1 : 0;
  }
  return n;
}

void PgStore::OnSessionState(Slot& slot) {
  if (shutting_down_) return;
  switch (slot.session->state()) {
    case PgSession::State::kIdle:
      // A session turns idle after every pipeline; only a fresh connection is news.
      if (slot.connected) return;
      StopDeadline(slot);  // Connected in time.
      slot.connected = true;
      // The backoff starts over only once a transaction succeeds (see Complete): a database
      // that accepts connections but does not answer is retried less and less often.
      if (slot.logged_down) {
        Log(LogLevel::kInfo, "database connection restored");
        slot.logged_down = false;
      }
      if (!table_ready_ && !slot.in_tx) EnsureTable(slot);
      NotifyCapacity();
      return;
    case PgSession::State::kBroken:
      StopDeadline(slot);
      slot.connected = false;
      NotifyCapacity();         // Readiness may have changed: waiting checks must not wait on it.
      if (!slot.logged_down) {  // Once per outage, not once per attempt.
        Log(LogLevel::kWarn, "database connection failed")
            .Str("table", options_.table.Plain())
            .Str("error", slot.session->last_error());
        slot.logged_down = true;
      }
      ScheduleReconnect(slot);
      return;
    default:
      return;
  }
}

void PgStore::ScheduleReconnect(Slot& slot) {
  slot.backoff_ms = std::clamp(slot.backoff_ms * 2, kMinBackoffMs, kMaxBackoffMs);
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  // Jitter of +-25% so that sidecars that lost the database together do not return together.
  const uint64_t jittered =
      slot.backoff_ms * 3 / 4 + rng() % std::max<uint64_t>(1, slot.backoff_ms / 2);
  uv_timer_start(
      &slot.timer,
      [](uv_timer_t* timer) {
        auto* s = static_cast<Slot*>(timer->data);
        if (!s->store->shutting_down_) s->store->Connect(*s);
      },
      jittered, 0);
}

void PgStore::EnsureTable(Slot& slot) {
  if (creating_table_) return;
  creating_table_ = true;
  CheckTable(slot, /*created=*/false);
}

void PgStore::CheckTable(Slot& slot, bool created) {
  // NULL: no such table. Otherwise whether this role may do what checks do. (CREATE TABLE IF
  // NOT EXISTS alone would not do: it needs CREATE on the schema even when the table exists.)
  const std::string privileges =
      "has_table_privilege($1, 'SELECT') AND has_table_privilege($1, 'INSERT') AND "
      "has_table_privilege($1, 'UPDATE')";
  RunTableWork(slot,
               {{"SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE " + privileges + " END",
                 {table_sql_}}},
               [this, &slot, created](std::vector<PgResultPtr> results) {
                 PGresult* r = results[0].get();
                 if (PQntuples(r) != 1) return TableFailed(slot, "the table check returned no row");
                 if (PQgetisnull(r, 0, 0)) {
                   if (!options_.create_table || created) {
                     return TableFailed(slot,
                                        "the table does not exist and "
                                        "RATE_LIMIT_PG_CREATE_TABLE=false");
                   }
                   return CreateTable(slot);
                 }
                 if (std::string_view(PQgetvalue(r, 0, 0)) != "t") {
                   return TableFailed(slot,
                                      "the database role lacks SELECT, INSERT or UPDATE on the "
                                      "table");
                 }
                 creating_table_ = false;
                 table_ready_ = true;
                 table_problem_logged_ = false;
                 Log(LogLevel::kInfo, "database ready").Str("table", options_.table.Plain());
                 NotifyCapacity();
               });
}

void PgStore::CreateTable(Slot& slot) {
  // The advisory lock serializes the DDL of sidecars that start together: CREATE TABLE IF NOT
  // EXISTS alone can still fail on a concurrent creation of the same name.
  RunTableWork(
      slot,
      {
          {"BEGIN", {}},
          {"SELECT pg_advisory_xact_lock(hashtext($1))", {"ratelimit:" + options_.table.Plain()}},
          {CreateTableSql(options_.table), {}},
          {"COMMIT", {}},
      },
      [this, &slot](std::vector<PgResultPtr>) { CheckTable(slot, /*created=*/true); });
}

void PgStore::RunTableWork(Slot& slot, std::vector<PgQuery> queries,
                           std::function<void(std::vector<PgResultPtr>)> next) {
  slot.in_tx = true;
  StartDeadline(slot, std::max<uint64_t>(options_.timeout_ms, kBackgroundTimeoutMs));
  slot.session->Run(std::move(queries), [this, &slot, next = std::move(next)](
                                            Result<std::vector<PgResultPtr>> r) {
    StopDeadline(slot);
    slot.in_tx = false;
    if (!r.ok()) {
      // A failed BEGIN ... COMMIT leaves the transaction aborted on a live session: end it.
      if (slot.session->state() == PgSession::State::kIdle) {
        slot.in_tx = true;
        StartDeadline(slot, std::max<uint64_t>(options_.timeout_ms, kBackgroundTimeoutMs));
        slot.session->Run({{"ROLLBACK", {}}}, [&slot](Result<std::vector<PgResultPtr>>) {
          StopDeadline(slot);
          slot.in_tx = false;
        });
      }
      TableFailed(slot, r.status().message());
      return;
    }
    next(std::move(*r));
  });
}

void PgStore::TableFailed(Slot& slot, const std::string& why) {
  creating_table_ = false;
  Log(LogLevel::kDebug, "rate limit table check failed; retrying").Str("error", why);
  if (!table_problem_logged_) {  // Once until the table is usable again, not once per retry.
    table_problem_logged_ = true;
    Log(LogLevel::kError, options_.create_table ? "cannot create or use the rate limit table"
                                                : "the rate limit table is not usable")
        .Str("table", options_.table.Plain())
        .Str("error", why);
  }
  // A broken session shares the slot's timer with the reconnect already scheduled, and checks
  // the table again once connected: only a live session needs a table retry.
  if (slot.session->state() != PgSession::State::kBroken) ScheduleRetryOfTable(slot);
}

void PgStore::ScheduleRetryOfTable(Slot& slot) {
  slot.backoff_ms = std::clamp(slot.backoff_ms * 2, kMinBackoffMs, kMaxBackoffMs);
  uv_timer_start(
      &slot.timer,
      [](uv_timer_t* timer) {
        auto* s = static_cast<Slot*>(timer->data);
        PgStore* store = s->store;
        if (store->shutting_down_ || store->table_ready_) return;
        if (s->session->state() == PgSession::State::kIdle && !s->in_tx) {
          store->EnsureTable(*s);
        } else if (s->session->state() != PgSession::State::kBroken) {
          store->ScheduleRetryOfTable(*s);  // Busy for now; a broken session retries on connect.
        }
      },
      slot.backoff_ms, 0);
}

void PgStore::Take(std::vector<StoreOp> batch, TakeDone done) {
  Slot* slot = nullptr;
  for (auto& s : slots_) {
    if (s->session->state() == PgSession::State::kIdle && !s->in_tx) {
      slot = s.get();
      break;
    }
  }
  if (slot == nullptr || !table_ready_) {  // A broken contract: answer rather than crash.
    done(Status::Unavailable("no free database session"));
    return;
  }
  auto tx = std::make_shared<Transaction>();
  tx->batch = std::move(batch);
  tx->done = std::move(done);
  std::map<std::string, std::vector<size_t>> positions_of_key;
  for (size_t i = 0; i < tx->batch.size(); ++i) {
    positions_of_key[RowKeyHex(tx->batch[i].key, options_.key_hashing)].push_back(i);
  }
  std::vector<std::string> capacities;
  std::vector<std::string> windows;
  for (auto& [key, positions] : positions_of_key) {  // std::map: sorted, the locking order.
    const Policy& first = tx->batch[positions.front()].policy;  // A missing row starts with it.
    capacities.push_back(std::to_string(first.limit));
    windows.push_back(std::to_string(first.window_ms));
    tx->keys.push_back(key);
    tx->positions.push_back(std::move(positions));
  }
  const std::string keys = ArrayLiteral(tx->keys);
  std::vector<PgQuery> queries = {
      {"BEGIN", {}},
      // The server gives up a little before our deadline, on a lock or a slow statement: the
      // transaction then fails cleanly on a live session, and no orphaned backend stays behind
      // waiting on a lock for a client that is gone.
      {"SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $1, true)",
       {std::to_string(std::max<uint64_t>(1, uint64_t{options_.timeout_ms} * 4 / 5))},
       "rl_timeouts"},
      {"INSERT INTO " + table_sql_ +
           " (key, tokens, updated_at, capacity, window_ms)"
           " SELECT decode(k, 'hex'), c, clock_timestamp(), c, w"
           " FROM unnest($1::text[], $2::int8[], $3::int8[]) AS n(k, c, w) ORDER BY 1"
           " ON CONFLICT (key) DO NOTHING",
       {keys, ArrayLiteral(capacities), ArrayLiteral(windows)},
       "rl_insert"},
      // A timestamp outside what int8 microseconds hold ('infinity', year 294276) reads as
      // NULL, for RepairRow, instead of failing the whole transaction.
      {"SELECT encode(key, 'hex'), tokens,"
       " CASE WHEN updated_at BETWEEN '1900-01-01' AND '9999-12-31'"
       " THEN floor(extract(epoch FROM updated_at) * 1000000)::int8 END,"
       " capacity, window_ms FROM " +
           table_sql_ +
           " WHERE key = ANY(ARRAY(SELECT decode(k, 'hex') FROM unnest($1::text[]) AS k))"
           " ORDER BY key FOR UPDATE",
       {keys},
       "rl_lock"},
      // After the locks are held: the time the checks are decided at.
      {"SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::int8", {}, "rl_clock"},
  };
  slot->in_tx = true;
  breaker_.OnStart(uv_now(loop_));
  metrics_.transactions.Add();
  metrics_.batch_size.Observe(tx->batch.size());
  tx->started_ns = uv_hrtime();
  StartDeadline(*slot, options_.timeout_ms);  // For the whole transaction: see Complete.
  slot->session->Run(std::move(queries), [this, slot, tx](Result<std::vector<PgResultPtr>> r) {
    OnLocked(*slot, tx, std::move(r));
  });
}

void PgStore::OnLocked(Slot& slot, std::shared_ptr<Transaction> tx,
                       Result<std::vector<PgResultPtr>> results) {
  if (!results.ok()) {
    Complete(slot, tx, results.status());
    return;
  }
  PGresult* rows = (*results)[3].get();
  PGresult* clock = (*results)[4].get();
  if (PQntuples(clock) != 1 || PQgetisnull(clock, 0, 0)) {
    Complete(slot, tx, Status::IoError("database returned no clock"));
    return;
  }
  const int64_t now_us = std::strtoll(PQgetvalue(clock, 0, 0), nullptr, 10);
  std::map<std::string, RawRow> raw_rows;
  for (int i = 0; i < PQntuples(rows); ++i) {
    raw_rows[PQgetvalue(rows, i, 0)] = RawRow{DoubleField(rows, i, 1), IntField(rows, i, 2),
                                              IntField(rows, i, 3), IntField(rows, i, 4)};
  }

  // Apply each key's operations in batch order to its locked row.
  std::vector<StoreAnswer> answers(tx->batch.size());
  std::vector<std::string> upd_keys, upd_tokens, upd_us, upd_caps, upd_windows;
  std::vector<const StoreOp*> ops;
  std::vector<StoreAnswer> decided;
  for (size_t k = 0; k < tx->keys.size(); ++k) {
    const std::string& key = tx->keys[k];
    const std::vector<size_t>& positions = tx->positions[k];
    auto found = raw_rows.find(key);
    if (found == raw_rows.end()) {  // Collected between our INSERT and SELECT: refuse, rarely.
      for (size_t pos : positions) {
        answers[pos].check =
            Refusal(CheckStatus::kStoreUnavailable, tx->batch[pos].policy.limit, Source::kDatabase);
        answers[pos].now_us = now_us;
      }
      continue;
    }
    ops.clear();
    for (size_t pos : positions) ops.push_back(&tx->batch[pos]);
    SharedRow row;
    const std::string problems = RepairRow(found->second, ops[0]->policy, now_us, row);
    if (!problems.empty()) {
      metrics_.repaired_rows.Add();
      // Named by its key's SHA-256 digest whatever RATE_LIMIT_PG_KEY_HASH says: with none, the
      // row key is the API key itself, a secret that must not reach the log.
      Log(LogLevel::kWarn, "repaired a malformed rate limit row")
          .Str("row_key_prefix", RowKeyHex(ops[0]->key, KeyHashing::kSha256).substr(0, 16))
          .Str("problems", problems);
    }
    decided.clear();
    const bool changed = ApplyOnRow(row, ops, now_us, decided);
    for (size_t j = 0; j < positions.size(); ++j) answers[positions[j]] = decided[j];
    if (changed || !problems.empty()) {
      upd_keys.push_back(key);
      upd_tokens.push_back(DoubleText(row.tokens));
      upd_us.push_back(std::to_string(row.updated_us));
      upd_caps.push_back(std::to_string(row.capacity));
      upd_windows.push_back(std::to_string(row.window_ms));
    }
  }

  std::vector<PgQuery> queries;
  if (upd_keys.empty()) {
    queries.push_back({"ROLLBACK", {}});  // Denials and reads write nothing.
  } else {
    queries.push_back(
        {"UPDATE " + table_sql_ +
             " AS t SET tokens = u.tokens,"
             " updated_at = 'epoch'::timestamptz + u.us * interval '1 microsecond',"
             " capacity = u.cap, window_ms = u.win"
             " FROM unnest($1::text[], $2::float8[], $3::int8[], $4::int8[], $5::int8[])"
             " AS u(k, tokens, us, cap, win) WHERE t.key = decode(u.k, 'hex')",
         {ArrayLiteral(upd_keys), ArrayLiteral(upd_tokens), ArrayLiteral(upd_us),
          ArrayLiteral(upd_caps), ArrayLiteral(upd_windows)},
         "rl_update"});
    queries.push_back({"COMMIT", {}});
  }
  slot.session->Run(std::move(queries), [this, &slot, tx, answers = std::move(answers)](
                                            Result<std::vector<PgResultPtr>> r) mutable {
    if (!r.ok()) {
      Complete(slot, tx, r.status());
    } else {
      Complete(slot, tx, std::move(answers));
    }
  });
}

void PgStore::Complete(Slot& slot, std::shared_ptr<Transaction> tx,
                       Result<std::vector<StoreAnswer>> results) {
  metrics_.duration.Observe(uv_hrtime() - tx->started_ns);
  if (results.ok()) {
    breaker_.OnSuccess();
    if (transactions_failing_) {
      transactions_failing_ = false;
      Log(LogLevel::kInfo, "database transactions succeed again")
          .Str("table", options_.table.Plain());
    }
  } else {
    metrics_.failed_transactions.Add();
    if (breaker_.OnFailure(uv_now(loop_))) {
      Log(LogLevel::kWarn,
          "circuit breaker open: checks go to the fallback at once while the database is probed")
          .Int("max_probe_interval_ms", CircuitBreaker::kMaxOpenMs);
    }
    if (table_ready_ && TableUnusable(slot.session->last_sqlstate())) {
      table_ready_ = false;  // Not ready: checks go to the fallback until the table is back.
      Log(LogLevel::kWarn, "the rate limit table is not usable any more; checking it again")
          .Str("table", options_.table.Plain())
          .Str("error", results.status().message());
    }
    Log(LogLevel::kDebug, "rate limit transaction failed").Str("error", results.status().message());
    if (!transactions_failing_) {  // Once per change of state, not once per transaction.
      transactions_failing_ = true;
      Log(LogLevel::kWarn, "database transactions failing; checks answered by the fallback")
          .Str("table", options_.table.Plain())
          .Str("error", results.status().message());
    }
    // A statement error leaves the transaction aborted on a live session: end it first.
    if (slot.session->state() == PgSession::State::kIdle) {
      slot.session->Run({{"ROLLBACK", {}}}, [this, &slot, tx, results](auto) mutable {
        StopDeadline(slot);
        slot.in_tx = false;
        TakeDone done = std::move(tx->done);
        done(std::move(results));
        if (!table_ready_ && !shutting_down_ && slot.session->state() == PgSession::State::kIdle &&
            !slot.in_tx) {
          EnsureTable(slot);
        }
      });
      return;
    }
  }
  StopDeadline(slot);
  slot.in_tx = false;
  if (results.ok()) slot.backoff_ms = 0;
  TakeDone done = std::move(tx->done);
  done(std::move(results));
}

void PgStore::Shutdown(std::function<void()> done) {
  if (shutting_down_) return;
  shutting_down_ = true;
  on_shutdown_ = std::move(done);
  uv_close(reinterpret_cast<uv_handle_t*>(&gc_timer_), [](uv_handle_t* handle) {
    auto* store = static_cast<PgStore*>(handle->data);
    --store->open_timers_;
    store->MaybeShutdownDone();
  });
  for (auto& slot : slots_) {
    slot->session->Close();
    for (uv_timer_t* timer : {&slot->timer, &slot->deadline}) {
      uv_close(reinterpret_cast<uv_handle_t*>(timer), [](uv_handle_t* handle) {
        auto* s = static_cast<Slot*>(handle->data);
        --s->store->open_timers_;
        s->store->MaybeShutdownDone();
      });
    }
  }
  NotifyCapacity();  // Not ready any more: checks still queued are answered now.
}

void PgStore::MaybeShutdownDone() {
  if (open_timers_ == 0 && on_shutdown_) {
    auto done = std::move(on_shutdown_);
    on_shutdown_ = nullptr;
    done();
  }
}

}  // namespace ratelimit
