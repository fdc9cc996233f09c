// sparseflow-audit ARGS must run as sparseflow audit ARGS.
#include <gtest/gtest.h>

#include <string>

#include "cli/argv0.hpp"

TEST(Argv0, SubcommandFromProgramName) {
  EXPECT_EQ(sf::cli::subcommand_from_argv0("/usr/local/bin/sparseflow-audit"), "audit");
  EXPECT_EQ(sf::cli::subcommand_from_argv0("sparseflow-convert"), "convert");
  EXPECT_EQ(sf::cli::subcommand_from_argv0("./sparseflow"), "");
  EXPECT_EQ(sf::cli::subcommand_from_argv0("sparseflow-"), "");
  EXPECT_EQ(sf::cli::subcommand_from_argv0("/opt/sparseflow-1.0/bin/sparseflow"), "");
  EXPECT_EQ(sf::cli::subcommand_from_argv0(nullptr), "");
}

TEST(Argv0, DispatchInsertsTheSubcommand) {
  std::string a0 = "/x/sparseflow-benchmark", a1 = "--size", a2 = "64x64";
  char* raw[] = {a0.data(), a1.data(), a2.data(), nullptr};
  int argc = 3;
  char** argv = raw;
  sf::cli::dispatch_argv0(argc, argv);
  ASSERT_EQ(argc, 4);
  EXPECT_STREQ(argv[0], "/x/sparseflow-benchmark");
  EXPECT_STREQ(argv[1], "benchmark");
  EXPECT_STREQ(argv[2], "--size");
  EXPECT_STREQ(argv[3], "64x64");
  EXPECT_EQ(argv[4], nullptr);

  std::string b0 = "sparseflow", b1 = "audit";
  char* plain[] = {b0.data(), b1.data(), nullptr};
  argc = 2;
  argv = plain;
  sf::cli::dispatch_argv0(argc, argv);
  EXPECT_EQ(argc, 2);
  EXPECT_EQ(argv, plain);
}
