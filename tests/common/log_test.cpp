#include "common/util/log.h"

#include <catch2/catch.hpp>

using sidetrace::log::Level;

TEST_CASE("log levels parse from their names") {
  Level level = Level::kOff;
  REQUIRE(sidetrace::log::ParseLevel("debug", &level));
  CHECK(level == Level::kDebug);
  REQUIRE(sidetrace::log::ParseLevel("warning", &level));
  CHECK(level == Level::kWarn);
  CHECK_FALSE(sidetrace::log::ParseLevel("loud", &level));
}

TEST_CASE("log values are quoted only when logfmt needs it") {
  CHECK(sidetrace::log::Quote("plain") == "plain");
  CHECK(sidetrace::log::Quote("two words") == "\"two words\"");
  CHECK(sidetrace::log::Quote("a\"b") == "\"a\\\"b\"");
  CHECK(sidetrace::log::Quote("") == "\"\"");
}
