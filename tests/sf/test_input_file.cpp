// require_regular_file / InputFile / read_text_file (src/core/input_file.hpp), the one gate every
// loader opens user files through: regular files and links to them pass; FIFOs, directories,
// sockets, devices and dangling links fail at once with the path and what it is.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>
#include <filesystem>

#include "core/input_file.hpp"
#include "sf_test_util.hpp"

using namespace sf;
using sftest::catch_error;

namespace {

class InputFileTest : public sftest::ScratchTest {
 protected:
  // The message of the Error(Io) that require_regular_file throws for `p`.
  std::string refusal(const std::string& p) {
    const Error e = sftest::catch_error_promptly(p, [&] { require_regular_file(p, "test input"); });
    EXPECT_EQ(e.status(), Status::Io) << e.what();
    return e.what();
  }
};

TEST_F(InputFileTest, RegularFilesAndLinksToThemPass) {
  sftest::write_bytes(path("a.txt"), {'h', 'i', '\n'});
  std::filesystem::create_symlink(path("a.txt"), path("link.txt"));
  EXPECT_NO_THROW(require_regular_file(path("a.txt"), "test input"));
  EXPECT_NO_THROW(require_regular_file(path("link.txt"), "test input"));
  EXPECT_EQ(read_text_file(path("link.txt"), "test input"), "hi\n");
  sftest::write_bytes(path("empty"), {});
  EXPECT_EQ(read_text_file(path("empty"), "test input"), "");
  const InputFile f(path("a.txt"), "test input");
  EXPECT_EQ(f.size(), 3u);
}

TEST_F(InputFileTest, EverythingElseIsNamed) {
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  EXPECT_NE(refusal(path("fifo"))
                .find("test input '" + path("fifo") +
                      "' is a FIFO (named pipe); expected a regular file"),
            std::string::npos);
  // read_text_file and InputFile refuse it the same way, without waiting for a writer.
  const Error r = sftest::catch_error_promptly(
      path("fifo"), [&] { read_text_file(path("fifo"), "--text file"); });
  EXPECT_NE(std::string(r.what()).find("--text file '" + path("fifo") + "' is a FIFO"),
            std::string::npos)
      << r.what();
  std::filesystem::create_symlink(path("fifo"), path("to_fifo"));
  EXPECT_NE(refusal(path("to_fifo")).find("is a FIFO"),
            std::string::npos);  // resolved, not the link

  std::filesystem::create_directory(path("dir"));
  EXPECT_NE(refusal(path("dir")).find("' is a directory; expected a regular file"),
            std::string::npos);
  EXPECT_NE(refusal("/dev/null").find("'/dev/null' is a character device"), std::string::npos);

  const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string sock = path("sock");
  ASSERT_LT(sock.size(), sizeof addr.sun_path);
  std::memcpy(addr.sun_path, sock.c_str(), sock.size() + 1);
  ASSERT_EQ(::bind(s, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_NE(refusal(sock).find("' is a socket"), std::string::npos);
  ::close(s);

  EXPECT_NE(refusal(path("absent")).find("No such file or directory"), std::string::npos);
  std::filesystem::create_symlink(path("absent"), path("dangling"));
  EXPECT_NE(refusal(path("dangling")).find("a symbolic link to a missing file"), std::string::npos);
}

}  // namespace
