// Tests for pipeline/download: resume with Range, servers that ignore Range, HTTP
// errors, verification, retries. A tiny HTTP/1.1 server on 127.0.0.1 (ephemeral port)
// runs in a thread; it stops by itself after a bounded time or number of connections.
#include "pipeline/download.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/error.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {
using testutil::random_bytes;
using testutil::read_text;
using testutil::write_bytes;

struct ServerConfig {
  std::string body;             // served at /file.bin; any other path is 404
  bool drop_first = false;      // first request: headers, half the body, then close
  bool always_drop = false;     // every request is dropped that way
  bool ignore_range = false;    // answer 200 with the whole body even to Range requests
};

class TestServer {
 public:
  explicit TestServer(ServerConfig config) : config_(std::move(config)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_GE(listen_fd_, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(listen(listen_fd_, 8), 0);
    socklen_t length = sizeof address;
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~TestServer() {
    stop_ = true;
    thread_.join();
    close(listen_fd_);
  }

  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }

  std::vector<std::string> requests() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }

 private:
  static constexpr int kMaxConnections = 20;
  static constexpr auto kLifetime = std::chrono::seconds(60);

  void serve() {
    const auto deadline = std::chrono::steady_clock::now() + kLifetime;
    int served = 0;
    while (!stop_ && served < kMaxConnections && std::chrono::steady_clock::now() < deadline) {
      pollfd waiting{listen_fd_, POLLIN, 0};
      if (poll(&waiting, 1, 50) <= 0) continue;
      const int fd = accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      handle(fd, served++);
      close(fd);
    }
  }

  static void send_all(int fd, const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
      const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += static_cast<size_t>(n);
    }
  }

  static std::string lower(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
    return text;
  }

  void handle(int fd, int index) {
    timeval timeout{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    std::string head;
    char buffer[4096];
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < 65536) {
      const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) return;
      head.append(buffer, static_cast<size_t>(n));
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      requests_.push_back(head);
    }
    const auto path_start = head.find(' ') + 1;
    const std::string path = head.substr(path_start, head.find(' ', path_start) - path_start);
    if (path != "/file.bin") {
      send_all(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found");
      return;
    }
    const std::string& body = config_.body;
    size_t from = 0;
    const std::string lowered = lower(head);
    const auto range = lowered.find("\r\nrange: bytes=");
    std::string status = "200 OK";
    std::string extra;
    if (range != std::string::npos && !config_.ignore_range) {
      from = std::stoul(lowered.substr(range + 15));
      if (from >= body.size()) {
        send_all(fd, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */" + std::to_string(body.size()) +
                         "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      status = "206 Partial Content";
      extra = "Content-Range: bytes " + std::to_string(from) + "-" + std::to_string(body.size() - 1) + "/" +
              std::to_string(body.size()) + "\r\n";
    }
    const std::string slice = body.substr(from);
    send_all(fd, "HTTP/1.1 " + status + "\r\nContent-Length: " + std::to_string(slice.size()) + "\r\n" + extra +
                     "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n");
    const bool drop = config_.always_drop || (config_.drop_first && index == 0);
    send_all(fd, drop ? slice.substr(0, slice.size() / 2) : slice);
    shutdown(fd, SHUT_WR);
  }

  ServerConfig config_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

// Range offset asked for in a request head, or -1.
long long range_of(const std::string& head) {
  const auto at = head.find("Range: bytes=");
  return at == std::string::npos ? -1 : std::stoll(head.substr(at + 13));
}

class DownloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    options_.backoff_seconds = 0.01;
    options_.retries = 3;
  }
  testutil::TempDir tmp_;
  fs::path dir_;
  pipeline::DownloadOptions options_;
};

TEST_F(DownloadTest, ResumesAfterDroppedConnection) {
  const std::string body = random_bytes(300000, 1);
  TestServer server({body, /*drop_first=*/true});
  const fs::path dest = dir_ / "file.bin";

  const auto result = pipeline::download(server.url("/file.bin"), dest, options_);

  EXPECT_EQ(read_text(dest), body);
  EXPECT_FALSE(fs::exists(dir_ / "file.bin.part"));
  EXPECT_EQ(result.bytes, body.size());
  EXPECT_EQ(result.attempts, 2);
  EXPECT_TRUE(result.resumed);
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(range_of(requests[0]), -1);
  EXPECT_GT(range_of(requests[1]), 0);
  EXPECT_LE(range_of(requests[1]), static_cast<long long>(body.size() / 2));
}

TEST_F(DownloadTest, RestartsWhenServerIgnoresRange) {
  const std::string body = random_bytes(200000, 2);
  TestServer server({body, /*drop_first=*/true, /*always_drop=*/false, /*ignore_range=*/true});
  const fs::path dest = dir_ / "file.bin";

  const auto result = pipeline::download(server.url("/file.bin"), dest, options_);

  EXPECT_EQ(read_text(dest), body);
  EXPECT_FALSE(result.resumed);
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_GT(range_of(requests[1]), 0);  // asked to resume, got the whole file, started over
}

TEST_F(DownloadTest, ContinuesPartLeftByEarlierRun) {
  const std::string body = random_bytes(100000, 3);
  TestServer server({body});
  const fs::path dest = dir_ / "file.bin";
  write_bytes(dir_ / "file.bin.part", body.substr(0, 12345));

  const auto result = pipeline::download(server.url("/file.bin"), dest, options_);

  EXPECT_EQ(read_text(dest), body);
  EXPECT_TRUE(result.resumed);
  EXPECT_EQ(result.attempts, 1);
  const auto requests = server.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(range_of(requests[0]), 12345);
}

// A link planted at the .part name is removed, never resumed nor written through.
TEST_F(DownloadTest, APlantedPartLinkIsNotWrittenThrough) {
  const std::string body = random_bytes(50000, 4);
  TestServer server({body});
  const fs::path dest = dir_ / "file.bin";
  write_bytes(dir_ / "victim.txt", "elsewhere");
  fs::create_symlink(dir_ / "victim.txt", dir_ / "file.bin.part");
  pipeline::download(server.url("/file.bin"), dest, options_);
  EXPECT_EQ(read_text(dir_ / "victim.txt"), "elsewhere");
  EXPECT_FALSE(fs::is_symlink(dest));
  EXPECT_EQ(read_text(dest), body);
}

TEST_F(DownloadTest, CompletePartAnswered416StartsOver) {
  const std::string body = random_bytes(5000, 4);
  TestServer server({body});
  const fs::path dest = dir_ / "file.bin";
  write_bytes(dir_ / "file.bin.part", body + "extra");  // longer than the file: 416
  options_.retries = 0;  // starting over is not a retry

  pipeline::download(server.url("/file.bin"), dest, options_);

  EXPECT_EQ(read_text(dest), body);
  EXPECT_EQ(server.requests().size(), 2u);
}

TEST_F(DownloadTest, NotFoundIsAClearErrorWithoutRetries) {
  TestServer server({"x"});
  const std::string url = server.url("/missing.bin");
  const fs::path dest = dir_ / "missing.bin";
  const std::string message = testutil::error_of([&] { pipeline::download(url, dest, options_); });
  EXPECT_NE(message.find(url), std::string::npos) << message;
  EXPECT_NE(message.find("404"), std::string::npos) << message;
  EXPECT_EQ(server.requests().size(), 1u);
  EXPECT_FALSE(fs::exists(dest));
  EXPECT_FALSE(fs::exists(dir_ / "missing.bin.part"));
}

TEST_F(DownloadTest, RejectedVerificationDeletesThePart) {
  TestServer server({random_bytes(1000, 5)});
  const fs::path dest = dir_ / "file.bin";
  options_.verify = [](const fs::path& part) { pipeline::fail("bad digest in {}", part.string()); };
  EXPECT_THROW(pipeline::download(server.url("/file.bin"), dest, options_), pipeline::Error);
  EXPECT_FALSE(fs::exists(dest));
  EXPECT_FALSE(fs::exists(dir_ / "file.bin.part"));
}

TEST_F(DownloadTest, GivesUpAfterRetriesAndKeepsThePart) {
  TestServer server({random_bytes(100000, 6), false, /*always_drop=*/true});
  const fs::path dest = dir_ / "file.bin";
  options_.retries = 2;
  const std::string message =
      testutil::error_of([&] { pipeline::download(server.url("/file.bin"), dest, options_); });
  EXPECT_NE(message.find("3 attempts"), std::string::npos) << message;
  EXPECT_EQ(server.requests().size(), 3u);
  EXPECT_FALSE(fs::exists(dest));
  EXPECT_GT(fs::file_size(dir_ / "file.bin.part"), 0u);
}

TEST_F(DownloadTest, ConnectionRefusedFailsAfterRetries) {
  // A port that was just free: nothing listens on it.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  socklen_t length = sizeof address;
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(address.sin_port)) + "/file.bin";
  options_.retries = 1;
  EXPECT_THROW(pipeline::download(url, dir_ / "file.bin", options_), pipeline::Error);
  EXPECT_FALSE(fs::exists(dir_ / "file.bin"));
}

TEST_F(DownloadTest, FileUrlsAreCopied) {
  const std::string body = random_bytes(7000, 7);
  write_bytes(dir_ / "source.bin", body);
  pipeline::download("file://" + (dir_ / "source.bin").string(), dir_ / "copy.bin", options_);
  EXPECT_EQ(read_text(dir_ / "copy.bin"), body);
}

TEST(DownloadUrlTest, FileNameOfUrl) {
  EXPECT_EQ(pipeline::url_file_name("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"),
            "cifar-10-binary.tar.gz");
  EXPECT_EQ(pipeline::url_file_name("https://example.org/a/b.pth?token=1#x"), "b.pth");
  EXPECT_THROW(pipeline::url_file_name("https://example.org/"), pipeline::Error);
  EXPECT_THROW(pipeline::url_file_name("https://example.org"), pipeline::Error);
}

}  // namespace
