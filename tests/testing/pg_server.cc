// Control of the test's own PostgreSQL server, for fault-injection and soak tests.
#include "tests/testing/pg_server.h"
