// BatchTransaction: one Take as one FOR UPDATE transaction of two pipelines on a lent session.
#include "sidecar/pg/batch_transaction.h"

#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <utility>

#include "sidecar/core/shared_bucket.h"
#include "sidecar/log/log.h"

namespace ratelimit {
namespace {

// A named statement: `prefix` and a digest of its SQL (FNV-1a, 64 bits). Sidecars of other
// tables or versions sharing a pooler's server connections then never run one another's
// statement under one name: a different statement has a different name, which a connection
// that lacks it answers with "does not exist", the sign StatementStrategy reads.
PgQuery Prepared(std::string sql, std::vector<std::string> params, std::string_view prefix) {
  uint64_t hash = 14695981039346656037ull;
  for (const char c : sql) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  char digest[17];
  std::snprintf(digest, sizeof(digest), "%016llx", static_cast<unsigned long long>(hash));
  std::string name = std::string(prefix) + "_" + digest;
  return {std::move(sql), std::move(params), std::move(name)};
}

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

// The locked rows by key, as read, whatever their values.
std::map<std::string, RawRow> ReadRows(PGresult* rows) {
  using C = LockPipeline::LockColumn;
  std::map<std::string, RawRow> raw_rows;
  for (int i = 0; i < PQntuples(rows); ++i) {
    raw_rows[PQgetvalue(rows, i, C::kKey)] =
        RawRow{DoubleField(rows, i, C::kTokens), IntField(rows, i, C::kUpdatedUs),
               IntField(rows, i, C::kCapacity), IntField(rows, i, C::kWindowMs),
               IntField(rows, i, C::kAlgorithm)};
  }
  return raw_rows;
}

// Decides the operations `ops` of `key` on its locked row `raw`, into `decision`.
void DecideKey(const std::string& key, const RawRow& raw, std::span<const StoreOp* const> ops,
               int64_t now_us, TransactionDecision& decision, std::vector<StoreAnswer>& decided) {
  SharedRow row;
  const std::string problems = RepairRow(raw, ops[0]->policy, now_us, row, ops[0]->algorithm);
  // Named by its key's SHA-256 digest whatever RATE_LIMIT_PG_KEY_HASH says: with none, the row
  // key is the API key itself, a secret that must not reach the log.
  const auto row_key_prefix = [&] {
    return RowKeyHex(ops[0]->key, KeyHashing::kSha256).substr(0, 16);
  };
  if (!problems.empty()) {
    ++decision.repaired_rows;
    Log(LogLevel::kWarn, "repaired a malformed rate limit row")
        .Str("row_key_prefix", row_key_prefix())
        .Str("problems", problems);
  }
  const Algorithm recorded = row.algorithm;
  decided.clear();
  const bool changed = ApplyOnRow(row, ops, now_us, decided);
  if (changed && row.algorithm != recorded) {
    // Sidecars of both algorithms on one table: each conversion is counted and logged.
    ++decision.switched_rows;
    Log(LogLevel::kWarn, "a rate limit row of the other algorithm was converted")
        .Str("row_key_prefix", row_key_prefix())
        .Str("to", row.algorithm == Algorithm::kFixedWindow ? "fixed_window" : "token_bucket");
  }
  if (changed || !problems.empty()) {
    decision.keys.push_back(key);
    decision.tokens.push_back(DoubleText(row.tokens));
    decision.updated_us.push_back(std::to_string(row.updated_us));
    decision.capacities.push_back(std::to_string(row.capacity));
    decision.windows.push_back(std::to_string(row.window_ms));
    decision.algorithms.push_back(row.algorithm);
  }
}

// The value of `algorithm` in the table (schema/postgres.sql).
std::string AlgorithmValue(Algorithm algorithm) {
  return std::to_string(static_cast<int>(algorithm));
}

// The INSERT of the rows missing: every one, or, when the plan's reservation is short of its
// keys, only keys without a row, at most plan.new_keys of them. The bounded form costs a probe
// of the key index per key, so it is used only then: the normal path stays as cheap as before.
PgQuery InsertQuery(const TransactionPlan& plan, const std::string& table_sql, std::string keys,
                    std::string capacities, std::string windows) {
  // A token bucket's row leaves `algorithm` to its default (0), as before the column existed.
  // A fixed window's starts with its window ended (see LockPipeline).
  const bool window = plan.batch.front().algorithm == Algorithm::kFixedWindow;
  const std::string insert =
      "INSERT INTO " + table_sql +
      (window ? " (key, tokens, updated_at, capacity, window_ms, algorithm)"
                " SELECT decode(k, 'hex'), c, clock_timestamp() - w * interval '1 millisecond',"
                " c, w, " +
                    AlgorithmValue(Algorithm::kFixedWindow)
              : std::string(" (key, tokens, updated_at, capacity, window_ms)"
                            " SELECT decode(k, 'hex'), c, clock_timestamp(), c, w")) +
      " FROM unnest($1::text[], $2::int8[], $3::int8[]) AS n(k, c, w)";
  if (!plan.insert_bounded()) {
    return Prepared(insert + " ORDER BY 1 ON CONFLICT (key) DO NOTHING",
                    {std::move(keys), std::move(capacities), std::move(windows)}, "rl_insert");
  }
  // A key another sidecar inserts meanwhile still conflicts (and is not counted as inserted).
  return Prepared(
      insert + " WHERE NOT EXISTS (SELECT FROM " + table_sql +
          " AS e WHERE e.key = decode(n.k, 'hex'))"
          " ORDER BY 1 LIMIT $4 ON CONFLICT (key) DO NOTHING",
      {std::move(keys), std::move(capacities), std::move(windows), std::to_string(plan.new_keys)},
      "rl_insert_bounded");
}

}  // namespace

TransactionPlan PlanTransaction(std::vector<StoreOp> batch, KeyHashing key_hashing) {
  TransactionPlan plan;
  plan.batch = std::move(batch);
  std::map<std::string, std::vector<size_t>> positions_of_key;
  for (size_t i = 0; i < plan.batch.size(); ++i) {
    positions_of_key[RowKeyHex(plan.batch[i].key, key_hashing)].push_back(i);
  }
  for (auto& [key, positions] : positions_of_key) {  // std::map: sorted, the locking order.
    plan.keys.push_back(key);
    plan.positions.push_back(std::move(positions));
  }
  plan.new_keys = plan.keys.size();
  return plan;
}

std::vector<PgQuery> LockQueries(const TransactionPlan& plan, const std::string& table_sql,
                                 uint32_t timeout_ms) {
  std::vector<std::string> capacities;
  std::vector<std::string> windows;
  for (const std::vector<size_t>& positions : plan.positions) {
    const Policy& first = plan.batch[positions.front()].policy;  // A missing row starts with it.
    capacities.push_back(std::to_string(first.limit));
    windows.push_back(std::to_string(first.window_ms));
  }
  const std::string keys = ArrayLiteral(plan.keys);
  std::vector<PgQuery> q(LockPipeline::kStatements);
  q[LockPipeline::kBegin] = {"BEGIN", {}};
  // The server gives up a little before our deadline, on a lock or a slow statement: the
  // transaction then fails cleanly on a live session, and no orphaned backend stays behind
  // waiting on a lock for a client that is gone. A client that stalls between its two pipelines
  // (stopped, throttled, cut off) while holding rows has its session ended by the server once
  // it has been idle for our whole deadline, by which time we would have abandoned it anyway:
  // no stalled pod holds a row longer than that. Set per transaction (is_local), so that it
  // holds through a transaction pooler and never outlives the transaction.
  // Every statement of the transaction finds its rows by key: no sequential scan. A prepared
  // statement's generic plan is made once per session, and one made while the table was new
  // and small (before autovacuum first analyzes it, a minute or more) scans the whole table for
  // each batch once it has grown: measured here, a quarter of the row writes per second of the
  // index plan, on 100,000 keys.
  q[LockPipeline::kTimeouts] = Prepared(
      "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $1, "
      "true), set_config('idle_in_transaction_session_timeout', $2, true), "
      "set_config('enable_seqscan', 'off', true)",
      {std::to_string(std::max<uint64_t>(1, uint64_t{timeout_ms} * 4 / 5)),
       std::to_string(std::max<uint32_t>(1, timeout_ms))},
      "rl_timeouts_index");
  q[LockPipeline::kInsert] =
      InsertQuery(plan, table_sql, keys, ArrayLiteral(capacities), ArrayLiteral(windows));
  // Columns in LockColumn order. A timestamp outside what int8 microseconds hold ('infinity',
  // year 294276) reads as NULL, for RepairRow, instead of failing the whole transaction.
  q[LockPipeline::kLock] = Prepared(
      "SELECT encode(key, 'hex'), tokens,"
      " CASE WHEN updated_at BETWEEN '1900-01-01' AND '9999-12-31'"
      " THEN floor(extract(epoch FROM updated_at) * 1000000)::int8 END,"
      " capacity, window_ms, algorithm FROM " +
          table_sql +
          " WHERE key = ANY(ARRAY(SELECT decode(k, 'hex') FROM unnest($1::text[]) AS k))"
          " ORDER BY key FOR UPDATE",
      {keys}, "rl_lock");
  // After the locks are held: the time the checks are decided at.
  q[LockPipeline::kClock] = Prepared(
      "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::int8", {}, "rl_clock");
  return q;
}

Result<TransactionDecision> Decide(const TransactionPlan& plan,
                                   std::span<const PgResultPtr> lock_results) {
  PGresult* clock = lock_results[LockPipeline::kClock].get();
  if (PQntuples(clock) != 1 || PQgetisnull(clock, 0, 0)) {
    return Status::IoError("database returned no clock");
  }
  const int64_t now_us = std::strtoll(PQgetvalue(clock, 0, 0), nullptr, 10);
  const std::map<std::string, RawRow> raw_rows = ReadRows(lock_results[LockPipeline::kLock].get());
  TransactionDecision decision;
  decision.answers.resize(plan.batch.size());
  std::vector<const StoreOp*> ops;
  std::vector<StoreAnswer> decided;
  for (size_t k = 0; k < plan.keys.size(); ++k) {
    const std::vector<size_t>& positions = plan.positions[k];
    auto found = raw_rows.find(plan.keys[k]);
    if (found == raw_rows.end()) {
      // Left out by a bounded INSERT (the fallback answers it), or collected between our INSERT
      // and SELECT (rarely): refused either way.
      if (plan.insert_bounded()) decision.deferred += positions.size();
      for (size_t pos : positions) {
        decision.answers[pos].check = Refusal(CheckStatus::kStoreUnavailable,
                                              plan.batch[pos].policy.limit, Source::kDatabase);
        decision.answers[pos].now_us = now_us;
        decision.answers[pos].new_key_deferred = plan.insert_bounded();
      }
      continue;
    }
    ops.clear();
    for (size_t pos : positions) ops.push_back(&plan.batch[pos]);
    DecideKey(plan.keys[k], found->second, ops, now_us, decision, decided);
    for (size_t j = 0; j < positions.size(); ++j) decision.answers[positions[j]] = decided[j];
  }
  return decision;
}

std::vector<PgQuery> FinishQueries(const TransactionDecision& decision,
                                   const std::string& table_sql) {
  if (decision.keys.empty()) return {{"ROLLBACK", {}}};  // Denials and reads write nothing.
  std::vector<std::string> params = {
      ArrayLiteral(decision.keys), ArrayLiteral(decision.tokens), ArrayLiteral(decision.updated_us),
      ArrayLiteral(decision.capacities), ArrayLiteral(decision.windows)};
  const bool one_algorithm =
      std::all_of(decision.algorithms.begin(), decision.algorithms.end(),
                  [&](Algorithm a) { return a == decision.algorithms.front(); });
  std::string algorithm = "u.alg";
  std::string arrays = "$1::text[], $2::float8[], $3::int8[], $4::int8[], $5::int8[]";
  std::string columns = "k, tokens, us, cap, win";
  if (one_algorithm) {
    algorithm = AlgorithmValue(decision.algorithms.front());
  } else {
    std::vector<std::string> values;
    for (Algorithm a : decision.algorithms) values.push_back(AlgorithmValue(a));
    params.push_back(ArrayLiteral(values));
    arrays += ", $6::int2[]";
    columns += ", alg";
  }
  std::vector<PgQuery> q(FinishPipeline::kStatements);
  q[FinishPipeline::kUpdate] =
      Prepared("UPDATE " + table_sql +
                   " AS t SET tokens = u.tokens,"
                   " updated_at = 'epoch'::timestamptz + u.us * interval '1 microsecond',"
                   " capacity = u.cap, window_ms = u.win, algorithm = " +
                   algorithm + " FROM unnest(" + arrays + ") AS u(" + columns +
                   ") WHERE t.key = decode(u.k, 'hex')",
               std::move(params), "rl_update");
  q[FinishPipeline::kCommit] = {"COMMIT", {}};
  return q;
}

void BatchTransaction::Start(const Context& context, SessionPool::Slot& slot,
                             std::vector<StoreOp> batch, TakeDone done) {
  TransactionPlan plan = PlanTransaction(std::move(batch), context.key_hashing);
  const bool reached = context.new_keys.reached();
  plan.new_keys = context.new_keys.Reserve(plan.keys.size(), uv_hrtime() / 1000);
  if (!reached && context.new_keys.reached()) {  // Once per flood, not per transaction.
    Log(LogLevel::kWarn,
        "new keys beyond the insert bound are answered by the fallback policy; raise "
        "RATE_LIMIT_PG_NEW_KEYS_PER_SEC if this is not a flood")
        .Int("new_keys_per_sec", context.new_keys.per_sec());
  }
  auto tx = std::make_shared<BatchTransaction>(context, slot, std::move(plan), std::move(done));
  tx->Lock();
}

BatchTransaction::BatchTransaction(const Context& context, SessionPool::Slot& slot,
                                   TransactionPlan plan, TakeDone done)
    : context_(context), slot_(slot), plan_(std::move(plan)), done_(std::move(done)) {}

void BatchTransaction::TransitionTo(State next) { state_ = next; }

void BatchTransaction::Lock() {
  std::vector<PgQuery> queries = LockQueries(plan_, context_.table_sql, context_.timeout_ms);
  context_.pool.Lend(slot_, SessionPool::Work::kTransaction);
  context_.metrics.transactions.Add();
  context_.metrics.batch_size.Observe(plan_.batch.size());
  started_ns_ = uv_hrtime();
  TransitionTo(State::kLocking);
  slot_.session().Run(std::move(queries),
                      [self = shared_from_this()](Result<std::vector<PgResultPtr>> r) {
                        self->OnLocked(std::move(r));
                      });
}

void BatchTransaction::OnLocked(Result<std::vector<PgResultPtr>> results) {
  if (!results.ok()) return Fail(results.status());
  Result<TransactionDecision> decision = Decide(plan_, *results);
  if (!decision.ok()) return Fail(decision.status());
  context_.metrics.repaired_rows.Add(decision->repaired_rows);
  context_.metrics.switched_rows.Add(decision->switched_rows);
  context_.metrics.new_keys_deferred.Add(decision->deferred);
  inserted_ = std::strtoull(PQcmdTuples((*results)[LockPipeline::kInsert].get()), nullptr, 10);
  commits_ = !decision->keys.empty();  // Else FinishQueries rolls back: nothing is inserted.
  rows_written_ = decision->keys.size();
  TransitionTo(State::kWriting);
  slot_.session().Run(FinishQueries(*decision, context_.table_sql),
                      [self = shared_from_this(), answers = std::move(decision->answers)](
                          Result<std::vector<PgResultPtr>> r) mutable {
                        if (!r.ok()) return self->Fail(r.status());
                        self->Succeed(std::move(answers));
                      });
}

void BatchTransaction::Succeed(std::vector<StoreAnswer> answers) {
  context_.metrics.duration.Observe(uv_hrtime() - started_ns_);
  context_.pool.EndTransaction(slot_, Status::Ok());
  context_.metrics.rows_written.Add(rows_written_);
  SettleNewKeys(commits_);
  Finish(std::move(answers));
}

void BatchTransaction::Fail(const Status& status) {
  context_.metrics.duration.Observe(uv_hrtime() - started_ns_);
  context_.metrics.failed_transactions.Add();
  context_.pool.EndTransaction(slot_, status);
  // A failure before the COMMIT was sent rolls the INSERT back. After it (a deadline, a lost
  // connection), the server may still have committed: counted as inserted, so that the bound
  // holds whatever happened.
  SettleNewKeys(state_ == State::kWriting && commits_);
  context_.on_failed(slot_.session().last_sqlstate(), status);  // Before ROLLBACK clears it.
  Log(LogLevel::kDebug, "rate limit transaction failed").Str("error", status.message());
  // A statement error leaves the transaction aborted on a live session: end it first.
  if (slot_.session().state() != DbSession::State::kIdle) return Finish(status);
  TransitionTo(State::kRollingBack);
  slot_.session().Run({{"ROLLBACK", {}}},
                      [self = shared_from_this(), status](Result<std::vector<PgResultPtr>>) {
                        self->Finish(status);
                      });
}

void BatchTransaction::SettleNewKeys(bool committed) {
  const size_t inserted = committed ? std::min(inserted_, plan_.new_keys) : 0;
  context_.metrics.new_keys.Add(inserted);
  context_.new_keys.GiveBack(plan_.new_keys - inserted);
}

void BatchTransaction::Finish(Result<std::vector<StoreAnswer>> result) {
  TransitionTo(State::kDone);
  context_.pool.Return(slot_);
  const bool failed = !result.ok();
  std::exchange(done_, nullptr)(std::move(result));
  if (failed) context_.after_failure(slot_);
}

}  // namespace ratelimit
