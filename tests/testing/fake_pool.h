// FakePool: a SessionPool of FakeDbSessions on a loop of its own, for tests without PostgreSQL.
#ifndef RATELIMIT_TESTS_TESTING_FAKE_POOL_H_
#define RATELIMIT_TESTS_TESTING_FAKE_POOL_H_

#include <gtest/gtest.h>
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "sidecar/pg/session_pool.h"
#include "tests/testing/fake_db_session.h"

namespace ratelimit {

// The pool's reconnect jitter is fixed at its lowest (3/4 of the backoff) so runs repeat.
// `on_connected` (settable at any time) hears what the pool's on_connected hears; connected()
// and capacity_calls() count the pool's callbacks. The destructor shuts the pool down (unless the
// test did), runs the loop until every handle is released, and expects uv_loop_close to succeed: a
// piece that kept a handle open fails the test. Pieces with handles of their own release them
// before that. Thread-safety: the test's thread only.
class FakePool {
 public:
  explicit FakePool(size_t connections = 2, uint32_t timeout_ms = 250) {
    uv_loop_init(&loop_);
    SessionPoolOptions options{connections, timeout_ms, "t", [] { return uint64_t{0}; }};
    pool_ = std::make_unique<SessionPool>(
        &loop_, std::move(options),
        [this](DbSession::StateListener on_state) {
          auto session = std::make_unique<FakeDbSession>(std::move(on_state));
          sessions_.push_back(session.get());
          return session;
        },
        [this](SessionPool::Slot& slot) {
          ++connected_;
          if (on_connected) on_connected(slot);
        },
        [this] { ++capacity_calls_; });
  }
  ~FakePool() {
    if (!pool_->closing()) pool_->Shutdown([] {});
    uv_run(&loop_, UV_RUN_DEFAULT);
    EXPECT_EQ(pool_->state(), SessionPool::State::kClosed);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  FakePool(const FakePool&) = delete;
  FakePool& operator=(const FakePool&) = delete;

  // Starts the pool and connects every session.
  void StartConnected() {
    pool_->Start();
    for (FakeDbSession* session : sessions_) session->Connected();
  }

  // Runs the loop until `done` holds, for at most `max_ms` of real time; whether it held.
  bool RunUntil(const std::function<bool()>& done, int max_ms = 10000) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(max_ms);
    while (!done()) {
      if (std::chrono::steady_clock::now() > give_up) return false;
      uv_run(&loop_, UV_RUN_NOWAIT);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

  uv_loop_t* loop() { return &loop_; }
  SessionPool& pool() { return *pool_; }
  FakeDbSession& session(size_t i) { return *sessions_.at(i); }
  int connected() const { return connected_; }
  int capacity_calls() const { return capacity_calls_; }

  std::function<void(SessionPool::Slot&)> on_connected;

 private:
  uv_loop_t loop_;
  std::vector<FakeDbSession*> sessions_;  // Owned by the pool, in slot order.
  std::unique_ptr<SessionPool> pool_;
  int connected_ = 0;
  int capacity_calls_ = 0;
};

}  // namespace ratelimit

#endif  // RATELIMIT_TESTS_TESTING_FAKE_POOL_H_
