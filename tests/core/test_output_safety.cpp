// Output-path rules (output_path.hpp), AtomicFile and AtomicDir (atomic_file.hpp, temp_files.hpp):
// nothing a user gave is written into or replaced without --force, and nothing half-written or
// temporary is left after a failure.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/output_path.hpp"
#include "core/temp_files.hpp"

namespace fs = std::filesystem;
using sf::Error;
using sf::Status;

namespace {

class OutputSafety : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           fmt::format("sf-output-safety-{}-{}", ::getpid(), std::random_device{}());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string p(const std::string& name) const { return (dir_ / name).string(); }
  static void put(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
  static std::string get(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  template <typename F>
  static std::string error_of(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::InvalidArgument) << e.what();
      return e.what();
    }
    return "(no error)";
  }
  fs::path dir_;
};

TEST_F(OutputSafety, OutputThatIsAnInputIsRefused) {
  put(p("model.safetensors"), "weights");
  const auto msg = error_of([&] {
    sf::check_output({p("model.safetensors"), "--output"}, {{p("model.safetensors"), "--input"}},
                     true);
  });
  EXPECT_NE(msg.find("same path as --input"), std::string::npos) << msg;
  EXPECT_EQ(get(p("model.safetensors")), "weights");
}

TEST_F(OutputSafety, OutputInsideAnInputDirectoryIsRefusedThroughSymlinksAndDots) {
  fs::create_directories(p("ckpt"));
  put(p("ckpt/model.safetensors"), "weights");
  fs::create_directory_symlink(p("ckpt"), p("link"));
  for (const std::string& out : {p("ckpt/model.safetensors"), p("ckpt/new.sf"),
                                 p("link/../ckpt/x.sf"), p("link/model.safetensors")}) {
    const auto msg = error_of([&] {
      sf::check_output({out, "--output"}, {{p("link"), "--input"}}, true);
    });
    EXPECT_TRUE(msg.find("inside --input") != std::string::npos ||
                msg.find("same path") != std::string::npos)
        << out << ": " << msg;
  }
  EXPECT_EQ(get(p("ckpt/model.safetensors")), "weights");
}

TEST_F(OutputSafety, OutputDirectoryHoldingAnInputIsRefused) {
  fs::create_directories(p("out"));
  put(p("out/calib.txt"), "text");
  const auto msg = error_of([&] {
    sf::check_output({p("out"), "--output"}, {{p("out/calib.txt"), "--calibration"}}, true);
  });
  EXPECT_NE(msg.find("would be replaced"), std::string::npos) << msg;
}

TEST_F(OutputSafety, ExistingOutputNeedsForce) {
  put(p("m.sf"), "old");
  const auto msg = error_of([&] { sf::check_output({p("m.sf"), "--output"}, {}, false); });
  EXPECT_NE(msg.find("--force"), std::string::npos) << msg;
  EXPECT_NO_THROW(sf::check_output({p("m.sf"), "--output"}, {}, true));
  EXPECT_NO_THROW(sf::check_output({p("new.sf"), "--output"}, {}, false));
  // A dangling symlink is an existing output too: writing through it would surprise.
  fs::create_symlink(p("nowhere"), p("dangling.sf"));
  EXPECT_NE(error_of([&] {
              sf::check_output({p("dangling.sf"), "--output"}, {}, false);
            }).find("--force"),
            std::string::npos);
}

TEST_F(OutputSafety, AtomicFileLeavesNothingWithoutCommit) {
  put(p("m.sf"), "old");
  {
    sf::AtomicFile f(p("m.sf"));
    f.write("new contents", 12);
    // no commit: an error path
  }
  EXPECT_EQ(get(p("m.sf")), "old");
  EXPECT_EQ(names(), std::vector<std::string>{"m.sf"});
}

TEST_F(OutputSafety, AtomicFileReplacesOnlyWhenComplete) {
  put(p("m.sf"), "old");
  sf::AtomicFile f(p("m.sf"));
  f.write("new", 3);
  EXPECT_EQ(get(p("m.sf")), "old");  // readers see the old file until commit
  f.commit();
  EXPECT_EQ(get(p("m.sf")), "new");
  EXPECT_EQ(names(), std::vector<std::string>{"m.sf"});
  // The usual permissions, not a temporary's 0600.
  const auto perms = fs::status(p("m.sf")).permissions();
  EXPECT_NE(perms & fs::perms::owner_read, fs::perms::none);
  const mode_t mask = ::umask(0);
  ::umask(mask);
  if (!(mask & 0044)) {
    EXPECT_NE(perms & fs::perms::others_read, fs::perms::none);
  }
}

TEST_F(OutputSafety, AtomicFileWithoutReplaceRefusesATargetThatAppeared) {
  sf::AtomicFile f(p("m.sf"), /*replace=*/false);
  f.write("new", 3);
  put(p("m.sf"), "someone else's");
  EXPECT_THROW(f.commit(), Error);
  EXPECT_EQ(get(p("m.sf")), "someone else's");
  EXPECT_EQ(names(), std::vector<std::string>{"m.sf"});
}

TEST_F(OutputSafety, AtomicDirIsAllOrNothing) {
  fs::create_directories(p("ckpt"));
  put(p("ckpt/old.txt"), "old");
  {
    sf::AtomicDir d(p("ckpt"), /*replace=*/true);
    put(d.path() + "/new.txt", "new");
    // no commit
  }
  EXPECT_EQ(names(), std::vector<std::string>{"ckpt"});
  EXPECT_TRUE(fs::exists(p("ckpt/old.txt")));
  {
    sf::AtomicDir d(p("ckpt"), /*replace=*/false);
    put(d.path() + "/new.txt", "new");
    EXPECT_THROW(d.commit(), Error);  // exists, and no --force
  }
  EXPECT_TRUE(fs::exists(p("ckpt/old.txt")));
  {
    sf::AtomicDir d(p("ckpt"), /*replace=*/true);
    put(d.path() + "/new.txt", "new");
    d.commit();
  }
  EXPECT_FALSE(fs::exists(p("ckpt/old.txt")));
  EXPECT_EQ(get(p("ckpt/new.txt")), "new");
  EXPECT_EQ(names(), std::vector<std::string>{"ckpt"});
}

}  // namespace
