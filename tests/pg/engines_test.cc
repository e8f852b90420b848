// BuildEngines for the PostgreSQL store: RATE_LIMIT_PG_STATEMENTS resolved into the store.
#include "sidecar/engines.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <utility>

#include "tests/testing/fake_clock.h"

namespace ratelimit {
namespace {

TEST(ResolveStatements, AutoIsPreparedUnlessTheUrlSaysPgBouncerAndExplicitChoicesStand) {
  EXPECT_EQ(ResolveStatements(PgStatements::kAuto, false), StatementMode::kPrepared);
  EXPECT_EQ(ResolveStatements(PgStatements::kAuto, true), StatementMode::kUnnamed);
  EXPECT_EQ(ResolveStatements(PgStatements::kPrepared, false), StatementMode::kPrepared);
  EXPECT_EQ(ResolveStatements(PgStatements::kPrepared, true), StatementMode::kPrepared);
  EXPECT_EQ(ResolveStatements(PgStatements::kUnnamed, false), StatementMode::kUnnamed);
  EXPECT_EQ(ResolveStatements(PgStatements::kUnnamed, true), StatementMode::kUnnamed);
}

TEST(BuildEngines, ThePostgresStoreSendsStatementsAsConfigured) {
  for (auto [setting, mode] : {std::pair{PgStatements::kAuto, StatementMode::kPrepared},
                               std::pair{PgStatements::kPrepared, StatementMode::kPrepared},
                               std::pair{PgStatements::kUnnamed, StatementMode::kUnnamed}}) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    FakeClock clock;
    Config config;
    config.store = StoreKind::kPostgres;
    config.pg_statements = setting;
    {
      Engines engines = BuildEngines(&loop, config, clock, EngineSecrets{});
      ASSERT_NE(engines.pg_store, nullptr);
      EXPECT_EQ(engines.pg_store->statement_mode(), mode) << static_cast<int>(setting);
      engines.pg_store->Shutdown([] {});
      uv_run(&loop, UV_RUN_DEFAULT);
    }
    EXPECT_EQ(uv_loop_close(&loop), 0);
  }
}

}  // namespace
}  // namespace ratelimit
