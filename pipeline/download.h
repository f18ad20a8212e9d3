#pragma once
// Resumable HTTP(S) downloads with libcurl.
//
// download(url, dest) writes into `dest` + ".part" and renames it to `dest` only once
// the transfer is complete and (when given) options.verify accepted it, so a file
// at `dest` is always whole. A `.part` left by an interrupted run or a failed attempt
// is continued with an HTTP `Range: bytes=N-` request; a server that answers such a
// request with the whole file (200 instead of 206) or with 416 makes the download
// start over from byte 0. file:// URLs work too (copied whole, never resumed).
//
// Not thread-compatible with other users of the same `dest`; distinct destinations
// may be downloaded from several threads at once.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace pipeline {

struct DownloadOptions {
  // Attempts after the first one when a transfer fails for a reason that may pass
  // (connection refused/dropped, timeout, HTTP 5xx/408/429). 0 = try once.
  int retries = 5;
  // Give up connecting after this many seconds.
  long connect_timeout_seconds = 30;
  // Abort an attempt whose speed stays below low_speed_bytes_per_second for this long.
  long low_speed_seconds = 60;
  long low_speed_bytes_per_second = 1024;
  // Wait before retry k (k = 1, 2, …): backoff_seconds * 2^(k-1), capped at max_backoff_seconds.
  double backoff_seconds = 1.0;
  double max_backoff_seconds = 30.0;
  // Progress on stderr: rate and ETA on one updating line on a terminal, a line
  // every progress_interval_seconds otherwise.
  bool show_progress = true;
  double progress_interval_seconds = 5.0;
  // Called with the complete `.part` file before it is renamed to `dest`. If it
  // throws, the `.part` file is deleted and the exception propagates (no retry).
  std::function<void(const std::filesystem::path& part)> verify;
};

struct DownloadResult {
  std::uintmax_t bytes = 0;  // size of `dest`
  int attempts = 0;          // transfers started (1 when nothing failed)
  bool resumed = false;      // some attempt continued a `.part` with a Range request
};

// Downloads `url` to `dest` (its folder must exist) as described above.
// Throws pipeline::Error naming the URL: at once for HTTP 4xx (other than 408/429),
// a malformed URL or an unsupported scheme; after options.retries failed retries
// otherwise (the `.part` file is then kept so that a later run resumes it).
// Throws pipeline::Error naming the file when `dest.part` cannot be written.
DownloadResult download(const std::string& url, const std::filesystem::path& dest,
                        const DownloadOptions& options = {});

// The last path segment of a URL, without query or fragment ("…/a/b.tar.gz?x=1" ->
// "b.tar.gz"). Throws pipeline::Error if the URL has no such segment.
std::string url_file_name(const std::string& url);

}  // namespace pipeline
