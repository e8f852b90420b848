// FakeDbSession and CannedResult: a database session and results that need no PostgreSQL.
#ifndef RATELIMIT_TESTS_TESTING_FAKE_DB_SESSION_H_
#define RATELIMIT_TESTS_TESTING_FAKE_DB_SESSION_H_

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sidecar/pg/db_session.h"

namespace ratelimit {

// A result of `columns` text columns holding `rows` (std::nullopt is NULL), built by libpq
// without a server, as a SELECT would return it.
inline PgResultPtr CannedResult(int columns,
                                const std::vector<std::vector<std::optional<std::string>>>& rows) {
  PgResultPtr result(PQmakeEmptyPGresult(nullptr, PGRES_TUPLES_OK));
  std::vector<std::string> names(columns);
  std::vector<PGresAttDesc> attrs(columns);
  for (int c = 0; c < columns; ++c) {
    names[c] = "c" + std::to_string(c);
    attrs[c] = PGresAttDesc{names[c].data(), 0, 0, 0, 25 /* text */, -1, -1};
  }
  if (PQsetResultAttrs(result.get(), columns, attrs.data()) == 0) std::abort();
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int c = 0; c < columns; ++c) {
      const std::optional<std::string>& value = rows[r][c];
      const int ok =
          value ? PQsetvalue(result.get(), static_cast<int>(r), c,
                             const_cast<char*>(value->c_str()), static_cast<int>(value->size()))
                : PQsetvalue(result.get(), static_cast<int>(r), c, nullptr, -1);
      if (ok == 0) std::abort();
    }
  }
  return result;
}

// The result of a statement that returns no rows (BEGIN, INSERT, ...).
inline PgResultPtr CommandResult() {
  return PgResultPtr(PQmakeEmptyPGresult(nullptr, PGRES_COMMAND_OK));
}

// `n` results of statements that return no rows (UPDATE, COMMIT, ROLLBACK, ...).
inline std::vector<PgResultPtr> CommandResults(size_t n) {
  std::vector<PgResultPtr> results;
  for (size_t i = 0; i < n; ++i) results.push_back(CommandResult());
  return results;
}

// A DbSession that the test drives by hand: Connect and Run only record what was asked, and the
// test answers with Connected, Answer, FailStatement or Break, as the database would. State
// changes reach the listener like PgSession's do.
// Thread-safety: the test's thread (the loop thread). Owned by whoever made it (a SessionPool).
class FakeDbSession final : public DbSession {
 public:
  explicit FakeDbSession(StateListener on_state) : on_state_(std::move(on_state)) {}

  void Connect() override {
    ++connects_;
    TransitionTo(State::kConnecting);
  }
  void Run(std::vector<PgQuery> queries, PipelineDone done) override {
    runs_.push_back(std::move(queries));
    done_ = std::move(done);
    sqlstate_.clear();
    TransitionTo(State::kBusy);
  }
  void Abandon(const std::string& why) override {
    if (state_ == State::kBroken || state_ == State::kClosed || state_ == State::kNew) return;
    ++abandons_;
    Break(why);
  }
  void Close() override {
    if (state_ == State::kClosed) return;
    on_state_ = nullptr;
    state_ = State::kClosed;
    if (done_) std::exchange(done_, nullptr)(Status::Unavailable("database session closed"));
  }

  State state() const override { return state_; }
  const std::string& last_error() const override { return last_error_; }
  const std::string& last_sqlstate() const override { return sqlstate_; }

  // The database accepted the connection.
  void Connected() { TransitionTo(State::kIdle); }
  // The pipeline in flight succeeded with `results`.
  void Answer(std::vector<PgResultPtr> results) {
    PipelineDone done = std::exchange(done_, nullptr);
    TransitionTo(State::kIdle);
    done(std::move(results));
  }
  // A statement of the pipeline in flight failed; the connection stays up.
  void FailStatement(const std::string& message, const std::string& sqlstate) {
    PipelineDone done = std::exchange(done_, nullptr);
    sqlstate_ = sqlstate;
    last_error_ = message;
    TransitionTo(State::kIdle);
    done(Status::IoError(message + " (SQLSTATE " + sqlstate + ")"));
  }
  // The connection (or the attempt) failed; a pipeline in flight fails.
  void Break(const std::string& why) {
    last_error_ = why;
    PipelineDone done = std::exchange(done_, nullptr);
    TransitionTo(State::kBroken);
    if (done) done(Status::Unavailable("database connection lost: " + why));
  }

  int connects() const { return connects_; }
  int abandons() const { return abandons_; }
  bool running() const { return static_cast<bool>(done_); }
  // Every pipeline asked for, oldest first.
  const std::vector<std::vector<PgQuery>>& runs() const { return runs_; }

 private:
  void TransitionTo(State next) {
    if (state_ == next) return;
    state_ = next;
    if (on_state_) on_state_();
  }

  StateListener on_state_;
  State state_ = State::kNew;
  PipelineDone done_;
  std::string last_error_;
  std::string sqlstate_;
  int connects_ = 0;
  int abandons_ = 0;
  std::vector<std::vector<PgQuery>> runs_;
};

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_FAKE_DB_SESSION_H_
