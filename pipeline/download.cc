#include "pipeline/download.h"

#include <curl/curl.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#include "pipeline/error.h"

namespace pipeline {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) fail("libcurl could not be initialized");
  });
}

struct CurlDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};

std::string human_bytes(double bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024.0 && unit < 4) {
    bytes /= 1024.0;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} {}", bytes, units[unit])
                   : fmt::format("{:.1f} {}", bytes, units[unit]);
}

std::string human_duration(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

// Progress of one transfer on stderr. On a terminal one line is redrawn a few times a
// second; elsewhere (logs, CI) a full line is printed every `interval` seconds.
class Progress {
 public:
  Progress(std::string label, bool enabled, double interval)
      : label_(std::move(label)), enabled_(enabled), tty_(isatty(STDERR_FILENO) == 1),
        interval_(tty_ ? 0.25 : interval) {}

  void start_attempt() {
    start_ = Clock::now();
    last_ = start_;
  }

  // done/total count the whole file (total 0 = unknown); fresh = bytes received in
  // this attempt, which sets the rate.
  void update(std::uintmax_t done, std::uintmax_t total, std::uintmax_t fresh, bool final = false) {
    if (!enabled_) return;
    const auto now = Clock::now();
    const double since_last = std::chrono::duration<double>(now - last_).count();
    if (!final && since_last < interval_) return;
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double rate = elapsed > 0 ? static_cast<double>(fresh) / elapsed : 0.0;
    std::string line = fmt::format("{}: {}{}", label_, final ? "done, " : "", human_bytes(static_cast<double>(done)));
    if (total > 0) {
      line += fmt::format(" / {} ({:.0f}%)", human_bytes(static_cast<double>(total)),
                          100.0 * static_cast<double>(done) / static_cast<double>(total));
    }
    line += fmt::format(", {}/s", human_bytes(rate));
    if (total > done && rate > 0) {
      line += fmt::format(", ETA {}", human_duration(static_cast<double>(total - done) / rate));
    }
    if (tty_) {
      fmt::print(stderr, "\r{}\033[K", line);
      drawn_ = true;
    } else {
      fmt::print(stderr, "{}\n", line);
    }
    std::fflush(stderr);
  }

  // Ends the redrawn line so that log messages start on a fresh one.
  void end_line() {
    if (drawn_) fmt::print(stderr, "\n");
    drawn_ = false;
  }

 private:
  std::string label_;
  bool enabled_;
  bool tty_;
  double interval_;
  bool drawn_ = false;
  Clock::time_point start_{};
  Clock::time_point last_{};
};

// State of one transfer attempt, shared with libcurl's callbacks.
struct Attempt {
  fs::path part;
  std::uintmax_t offset = 0;     // size of `.part` when the attempt began
  bool range_requested = false;  // a Range: bytes=offset- header was sent
  long status = 0;               // status of the latest response head (HTTP)
  long long range_start = -1;    // first byte of the latest Content-Range, -1 if none
  bool decided = false;          // the first body byte arrived and the file was opened
  bool appending = false;        // the body continues `.part` (206 from `offset`)
  std::FILE* file = nullptr;
  std::uintmax_t received = 0;   // body bytes received in this attempt
  std::string write_error;       // why writing `.part` failed (not retryable)
  Progress* progress = nullptr;
};

bool starts_with_nocase(const std::string& text, const char* prefix) {
  const size_t n = std::strlen(prefix);
  if (text.size() < n) return false;
  for (size_t i = 0; i < n; ++i) {
    if (std::tolower(static_cast<unsigned char>(text[i])) != std::tolower(static_cast<unsigned char>(prefix[i]))) {
      return false;
    }
  }
  return true;
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* attempt = static_cast<Attempt*>(user);
  const std::string line(data, size * count);
  if (starts_with_nocase(line, "HTTP/")) {
    // A new response head (redirects, 100-continue): forget the previous one.
    const auto space = line.find(' ');
    attempt->status = space == std::string::npos ? 0 : std::strtol(line.c_str() + space + 1, nullptr, 10);
    attempt->range_start = -1;
  } else if (starts_with_nocase(line, "content-range:")) {
    const auto bytes = line.find("bytes");
    if (bytes != std::string::npos) {
      const char* p = line.c_str() + bytes + 5;
      while (*p == ' ' || *p == '=') ++p;
      if (std::isdigit(static_cast<unsigned char>(*p))) attempt->range_start = std::strtoll(p, nullptr, 10);
    }
  }
  return size * count;
}

// Opens `.part` when the first body byte arrives: only then is it known whether the
// server honoured the Range request.
bool open_part(Attempt& attempt) {
  attempt.decided = true;
  attempt.appending = attempt.range_requested && attempt.status == 206 &&
                      attempt.range_start == static_cast<long long>(attempt.offset);
  if (attempt.range_requested && !attempt.appending) {
    spdlog::info("the server ignored the request to resume at byte {} (HTTP {}); downloading from the start",
                 attempt.offset, attempt.status);
  }
  // O_NOFOLLOW: a link planted at the .part name is refused, never written through.
  const int fd = ::open(attempt.part.c_str(),
                        O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (attempt.appending ? O_APPEND : O_TRUNC), 0644);
  attempt.file = fd < 0 ? nullptr : ::fdopen(fd, attempt.appending ? "ab" : "wb");
  if (attempt.file == nullptr) {
    const int error = errno;
    if (fd >= 0) ::close(fd);
    attempt.write_error = fmt::format("cannot open {} for writing: {}", attempt.part.string(), std::strerror(error));
    return false;
  }
  return true;
}

constexpr std::uintmax_t kMaxDownloadBytes = std::uintmax_t{2} << 30;

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* attempt = static_cast<Attempt*>(user);
  const size_t bytes = size * count;
  if (!attempt->decided && !open_part(*attempt)) return 0;
  // No file this program fetches is larger (the archive is 163 MB, the weights 233 MB):
  // a server or file:// source that never stops would otherwise fill the disk.
  const std::uintmax_t already = attempt->appending ? attempt->offset : 0;
  if (already + attempt->received + bytes > kMaxDownloadBytes) {
    attempt->write_error = fmt::format("{} would grow past {} bytes, more than any file this program fetches; the "
                                       "source is not the file expected",
                                       attempt->part.string(), kMaxDownloadBytes);
    return 0;
  }
  if (std::fwrite(data, 1, bytes, attempt->file) != bytes) {
    attempt->write_error = fmt::format("cannot write {}: {}", attempt->part.string(), std::strerror(errno));
    return 0;
  }
  attempt->received += bytes;
  return bytes;
}

int on_progress(void* user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t, curl_off_t) {
  auto* attempt = static_cast<Attempt*>(user);
  const std::uintmax_t base = attempt->appending ? attempt->offset : 0;
  attempt->progress->update(base + static_cast<std::uintmax_t>(dlnow),
                            dltotal > 0 ? base + static_cast<std::uintmax_t>(dltotal) : 0, attempt->received);
  return 0;
}

std::string http_reason(long code) {
  switch (code) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 410: return "Gone";
    case 416: return "Range Not Satisfiable";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "";
  }
}

// Errors that another attempt cannot fix.
bool permanent(CURLcode code) {
  switch (code) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_FILE_COULDNT_READ_FILE:
    case CURLE_REMOTE_FILE_NOT_FOUND:
    case CURLE_LOGIN_DENIED:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_ABORTED_BY_CALLBACK:
      return true;
    default:
      return false;
  }
}

enum class Outcome { Done, Retry, RetryFromStart };

struct AttemptResult {
  Outcome outcome = Outcome::Done;
  std::string reason;  // why a retry is needed
};

bool is_http(const std::string& url) {
  return starts_with_nocase(url, "http://") || starts_with_nocase(url, "https://");
}

std::uintmax_t size_or_zero(const fs::path& file) {
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  return ec ? 0 : size;
}

// One transfer into `part`. Throws for permanent failures; returns Retry* otherwise.
AttemptResult attempt_once(const std::string& url, const fs::path& part, const DownloadOptions& options,
                           Progress& progress, bool& resumed) {
  Attempt attempt;
  attempt.part = part;
  attempt.progress = &progress;
  if (is_http(url)) {
    attempt.offset = size_or_zero(part);
  } else {
    std::error_code ignored;
    fs::remove(part, ignored);  // no reliable way to tell whether a range was honoured
  }
  attempt.range_requested = attempt.offset > 0;

  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) fail("libcurl could not start a transfer for {}", url);
  char error_buffer[CURL_ERROR_SIZE] = {0};
  const std::string range = fmt::format("{}-", attempt.offset);
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https,file");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#endif
  curl_easy_setopt(c, CURLOPT_USERAGENT, "transfer-fetch/0.1 (libcurl)");
  curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, options.connect_timeout_seconds);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, options.low_speed_seconds);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, options.low_speed_bytes_per_second);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &attempt);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &attempt);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &attempt);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  // CURLOPT_RANGE rather than CURLOPT_RESUME_FROM: libcurl then leaves a 200 answer
  // to us instead of failing, and we restart from byte 0.
  if (attempt.range_requested) curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());

  progress.start_attempt();
  const CURLcode code = curl_easy_perform(c);
  if (attempt.file != nullptr && std::fclose(attempt.file) != 0 && attempt.write_error.empty()) {
    attempt.write_error = fmt::format("cannot write {}: {}", part.string(), std::strerror(errno));
  }
  progress.end_line();
  if (attempt.appending) resumed = true;
  if (!attempt.write_error.empty()) fail("{}", attempt.write_error);

  const std::string detail = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code);
  if (code == CURLE_HTTP_RETURNED_ERROR) {
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    const std::string what = fmt::format("HTTP {} {}", status, http_reason(status));
    if (status == 416 && attempt.range_requested) {
      return {Outcome::RetryFromStart, fmt::format("{} for a resume at byte {}", what, attempt.offset)};
    }
    if (status == 408 || status == 429 || status >= 500) return {Outcome::Retry, what};
    fail("cannot download {}: the server answered {}; check the URL, or use a local copy of the file", url, what);
  }
  if (code != CURLE_OK) {
    if (permanent(code)) fail("cannot download {}: {}", url, detail);
    return {Outcome::Retry, detail};
  }
  if (!attempt.decided) {
    // An empty body: the result is an empty file (unless a resume was confirmed).
    if (!(attempt.range_requested && attempt.status == 206) && !open_part(attempt)) fail("{}", attempt.write_error);
    if (attempt.file != nullptr) std::fclose(attempt.file);
  }
  progress.update(size_or_zero(part), 0, attempt.received, /*final=*/true);
  progress.end_line();
  return {};
}

}  // namespace

std::string url_file_name(const std::string& url) {
  std::string path = url.substr(0, url.find_first_of("?#"));
  const auto scheme = path.find("://");
  if (scheme != std::string::npos) {
    const auto slash = path.find('/', scheme + 3);
    path = slash == std::string::npos ? std::string() : path.substr(slash);
  }
  const auto last = path.find_last_of('/');
  const std::string name = last == std::string::npos ? path : path.substr(last + 1);
  if (name.empty() || name == "." || name == "..") {
    fail("cannot tell a file name from the URL '{}': it must end in /NAME", url);
  }
  return name;
}

DownloadResult download(const std::string& url, const fs::path& dest, const DownloadOptions& options) {
  init_curl_once();
  const fs::path part = fs::path(dest).concat(".part");
  Progress progress(dest.filename().string(), options.show_progress, options.progress_interval_seconds);
  DownloadResult result;
  std::error_code part_error;
  const fs::file_status part_status = fs::symlink_status(part, part_error);
  if (fs::exists(part_status) && !fs::is_regular_file(part_status)) {
    // The .part name is this program's: a link (or anything but a file) there is neither
    // resumed nor written through, only removed (a folder of the user's is an error).
    if (fs::is_directory(part_status)) fail("{} is a folder, in the way of the download", part.string());
    fs::remove(part, part_error);
  }
  if (size_or_zero(part) > 0 && is_http(url)) {
    spdlog::info("resuming {} from {} already in {}", url, human_bytes(static_cast<double>(size_or_zero(part))),
                 part.string());
  }
  bool restarted = false;
  for (int attempt = 1;; ++attempt) {
    result.attempts = attempt;
    const AttemptResult outcome = attempt_once(url, part, options, progress, result.resumed);
    if (outcome.outcome == Outcome::Done) break;
    if (outcome.outcome == Outcome::RetryFromStart) {
      std::error_code ignored;
      fs::remove(part, ignored);
      // A stale .part is not a failure of the server: start over at once, without
      // spending an attempt of the retry budget (once, so a server that keeps
      // answering 416 still ends in an error).
      if (!restarted) {
        restarted = true;
        spdlog::info("{}: {}; starting over from byte 0", url, outcome.reason);
        --attempt;
        continue;
      }
    }
    if (attempt > options.retries) {
      fail("cannot download {}: {} (gave up after {} attempts); {} bytes are kept in {} and the next run resumes "
           "from there",
           url, outcome.reason, attempt, size_or_zero(part), part.string());
    }
    const double wait = std::min(options.max_backoff_seconds,
                                 options.backoff_seconds * std::pow(2.0, static_cast<double>(attempt - 1)));
    spdlog::warn("download of {} failed: {}; retry {}/{} in {:.1f} s", url, outcome.reason, attempt,
                 options.retries, wait);
    std::this_thread::sleep_for(std::chrono::duration<double>(std::max(0.0, wait)));
  }

  if (options.verify) {
    try {
      options.verify(part);
    } catch (...) {
      std::error_code ignored;
      fs::remove(part, ignored);
      throw;
    }
  }
  std::error_code ec;
  fs::rename(part, dest, ec);
  if (ec) fail("cannot rename {} to {}: {}", part.string(), dest.string(), ec.message());
  result.bytes = size_or_zero(dest);
  return result;
}

}  // namespace pipeline
