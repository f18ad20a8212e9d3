// A corpus of hostile and broken inputs, generated here by code (no data files are
// committed), run against the real stage binaries in TRANSFER_BIN: every untrusted
// input of every stage (archives, batch files, weights files, feature caches,
// checkpoints, run folders, flags) in the ways it arrives broken or malicious --
// truncated, foreign bytes, out-of-range numbers, links to /dev/zero, FIFOs, folders
// where files belong, tar entries that climb out with "..", absolute names, link
// chains, --out aimed at an input.
//
// Each case (the table in all_cases()) is: a name; a setup that builds its inputs in a
// fresh temporary folder ROOT (ROOT/in: inputs, ROOT/out: where outputs go, ROOT/cwd:
// the stage's working folder, ROOT/tmp: the stage's TMPDIR); the stage's command line;
// the exit codes the contract allows (1: a bad file or run-time failure, 2: bad flags
// or usage; both only where the contract allows either); the text(s) the error must
// contain (the offending file, entry or flag); and the paths that must not exist
// afterwards (anything that looks finished: a .verified marker, a final cache, a run's
// config.json/metrics.json, a report, a file planted outside ROOT). For EVERY case the
// harness asserts:
//   (a) the exit code is one of the allowed 1/2: never 0, never a signal (abort = 134),
//       never a hang (each command runs under `timeout`; a case that could block on a
//       FIFO or read /dev/zero forever gets 20 s, and a timeout fails the case);
//   (b) the error text (stderr from its first "[error]" line on; all of stderr when
//       there is none, as for CLI11's flag errors) contains each expected text;
//   (c) stdout and stderr hold no stack trace or crash text: none of "Exception raised
//       from", "frame #", "terminate called", "Aborted", "Segmentation", "what():";
//   (d) every input is untouched: ROOT/in (and any shared fixture folder the command
//       reads directly) is walked before and after without following links, and every
//       entry must be the same -- regular files byte-identical (files over 64 MiB, the
//       fine-tuning checkpoint's tensors, by inode, size, mtime and ctime, which any
//       write changes), links with the same target, no entry added or removed; and
//       nothing is created outside ROOT: ROOT holds only in/, out/, cwd/, tmp/ and
//       logs/ afterwards, cwd/ and tmp/ are empty, and the escape targets of the
//       archive cases (ROOT/.., ROOT/out/...) do not exist;
//   (e) the case's must-not-exist paths do not exist, and nothing under ROOT/out has a
//       temporary's name (*.tmp*, *.partial, *.part, *.new, *.old): a failed stage
//       leaves no half-written file behind.
// Valid inputs to corrupt (a synthetic CIFAR folder, a small feature cache, a head run
// and a fine-tuning run) are made once with the stages themselves, in a folder shared
// by the test processes of one ctest run (ctest starts one process per case): see
// Shared. A fine-tuning checkpoint (~1 GB of tensors) is made per case that needs one,
// inside that case's own folder.
//
// The contract is the pipeline's hardening guarantee (README "What it guarantees",
// DESIGN.md "Conventions"); every case must pass.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "archive_util.h"
#include "pipeline/digest.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;
using testutil::Entry;

namespace {

// ---- small helpers ---------------------------------------------------------------

[[noreturn]] void setup_fail(const std::string& what) { throw std::runtime_error(what); }

std::string read_all(const fs::path& file) { return testutil::read_text(file); }

void write_file(const fs::path& file, const std::string& bytes) {
  fs::create_directories(file.parent_path());
  testutil::write_bytes(file, bytes);
  if (!fs::is_regular_file(file) || fs::file_size(file) != bytes.size()) setup_fail("cannot write " + file.string());
}

// Replaces `file` (which may be a hard link shared with other files) by a new file.
void replace_file(const fs::path& file, const std::string& bytes) {
  fs::remove(file);
  write_file(file, bytes);
}

void make_fifo(const fs::path& file) {
  fs::create_directories(file.parent_path());
  if (::mkfifo(file.c_str(), 0644) != 0) setup_fail("mkfifo " + file.string() + " failed");
}

void make_symlink(const fs::path& link, const fs::path& target) {
  fs::create_directories(link.parent_path());
  fs::remove(link);
  fs::create_symlink(target, link);
}

void copy_tree(const fs::path& from, const fs::path& to) {
  fs::create_directories(to.parent_path());
  fs::copy(from, to, fs::copy_options::recursive);
}

void edit_json(const fs::path& file, const std::function<void(json&)>& edit) {
  json j = json::parse(read_all(file));
  edit(j);
  replace_file(file, j.dump(2) + "\n");
}

// `n` CIFAR records of random pixels with valid labels (0..9).
std::string cifar_records(int64_t n, unsigned seed) {
  std::string bytes = testutil::random_bytes(static_cast<size_t>(n) * 3073, seed);
  for (int64_t i = 0; i < n; ++i) bytes[static_cast<size_t>(i) * 3073] = static_cast<char>(i % 10);
  return bytes;
}

const char* const kBatches[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
const std::string kTop = "cifar-10-batches-bin/";

// What an official archive holds: the folder, six batch files (`records` each),
// batches.meta.txt and readme.html.
std::vector<Entry> cifar_entries(int64_t records = 3) {
  std::vector<Entry> entries{{kTop, "", Entry::Dir}};
  unsigned seed = 20;
  for (const char* name : kBatches) entries.push_back({kTop + name, cifar_records(records, seed++)});
  entries.push_back({kTop + "batches.meta.txt", "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n"});
  entries.push_back({kTop + "readme.html", "<html></html>\n"});
  return entries;
}

Entry& entry(std::vector<Entry>& entries, const std::string& name) {
  for (Entry& e : entries) {
    if (e.name == name) return e;
  }
  setup_fail("no archive entry " + name);
}

void drop_entry(std::vector<Entry>& entries, const std::string& name) {
  for (auto it = entries.begin(); it != entries.end(); ++it) {
    if (it->name == name) {
      entries.erase(it);
      return;
    }
  }
  setup_fail("no archive entry " + name);
}

bool process_alive(long pid) { return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH); }

uint64_t mix(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= 1099511628211ull;
  }
  return h;
}

std::string hex(uint64_t v) {
  std::ostringstream out;
  out << std::hex << v;
  return out.str();
}

// ---- the shared valid inputs -------------------------------------------------------

std::string stage_log(const fs::path& log) { return fs::exists(log) ? read_all(log) : std::string("(no log)"); }

// Runs a stage (with TRANSFER_BIN) that must succeed; throws with its log if not.
void run_ok(const std::string& stage_and_args, const fs::path& log) {
  const int code = testutil::run_stage(stage_and_args, log);
  if (code != 0) setup_fail("making a valid input failed (exit " + std::to_string(code) + "): " + stage_and_args + "\n" + stage_log(log));
}

// Valid inputs made with the stages, in a folder shared by the test processes of one
// parent (ctest runs each case in its own process; their parent is ctest), keyed by the
// binaries' identity so that rebuilt stages (or a rebuilt test) make fresh ones. An
// flock serializes building; each artifact is built under a temporary name and renamed.
// Folders of dead parents and of older binaries are removed on first use. It stays
// small (~2 MB): the fine-tuning run's model.pt is deleted (transfer-compare reads only
// its JSON and CSV files).
class Shared {
 public:
  static Shared& get() {
    static Shared shared;
    return shared;
  }

  const fs::path& dir() const { return dir_; }

  // transfer-synth --train 50 --test 10 --seed 1: 10 records per training batch file.
  fs::path data() {
    return artifact("data", [](const fs::path& out, const fs::path& log) {
      run_ok("transfer-synth --out " + out.string() + " --train 50 --test 10 --seed 1", log);
    });
  }

  // fc7 of the first 40 training and 10 test images at 64 px, random weights.
  fs::path cache() {
    const fs::path d = data();
    return artifact("cache.h5", [&](const fs::path& out, const fs::path& log) {
      run_ok("transfer-extract --data " + d.string() + " --weights random:0 --out " + out.string() +
                 " --image-size 64 --limit-train 40 --limit-test 10 --batch-size 20 --device cpu --threads 1",
             log);
    });
  }

  fs::path head_run() {
    const fs::path c = cache();
    return artifact("head", [&](const fs::path& out, const fs::path& log) {
      run_ok("transfer-head --features " + c.string() + " --out " + out.string() + " --epochs 1 --batch-size 16 --threads 1",
             log);
    });
  }

  fs::path finetune_run() {
    const fs::path d = data();
    return artifact("finetune", [&](const fs::path& out, const fs::path& log) {
      run_ok("transfer-finetune --data " + d.string() + " --weights random:0 --out " + out.string() +
                 " --epochs 1 --lr 1e-4 --image-size 64 --batch-size 16 --limit-train 40 --limit-test 10 --device cpu "
                 "--threads 1",
             log);
      std::error_code ignored;
      fs::remove(out / "model.pt", ignored);
    });
  }

 private:
  Shared() {
    const std::string prefix = "transfer_hostile_shared_" + std::to_string(::getuid()) + "_";
    const long parent = static_cast<long>(::getppid());
    uint64_t key = 14695981039346656037ull;
    std::vector<fs::path> binaries{"/proc/self/exe"};
    for (const char* stage : {"fetch", "synth", "extract", "head", "finetune", "compare"}) {
      binaries.push_back(fs::path(TRANSFER_BIN) / (std::string("transfer-") + stage));
    }
    for (const fs::path& binary : binaries) {
      struct stat st {};
      if (::stat(binary.c_str(), &st) != 0) continue;
      key = mix(mix(mix(mix(key, static_cast<uint64_t>(st.st_ino)), static_cast<uint64_t>(st.st_size)),
                    static_cast<uint64_t>(st.st_mtim.tv_sec)),
                static_cast<uint64_t>(st.st_mtim.tv_nsec));
    }
    const std::string name = prefix + std::to_string(parent) + "_" + hex(key);
    remove_stale(prefix, parent, name);
    dir_ = fs::temp_directory_path() / name;
    fs::create_directories(dir_);
  }

  // Removes the shared folders of dead parents, and this parent's of other binaries.
  static void remove_stale(const std::string& prefix, long parent, const std::string& ours) {
    std::error_code ec;
    for (fs::directory_iterator it(fs::temp_directory_path(), ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.rfind(prefix, 0) != 0 || name == ours) continue;
      const std::string rest = name.substr(prefix.size());
      const long owner = std::strtol(rest.c_str(), nullptr, 10);
      if (owner <= 0 || (owner != parent && process_alive(owner))) continue;
      const int fd = ::open((it->path() / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) continue;
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
        std::error_code ignored;
        fs::remove_all(it->path(), ignored);
      }
      ::close(fd);
    }
  }

  fs::path artifact(const std::string& name, const std::function<void(const fs::path&, const fs::path&)>& build) {
    const fs::path final_path = dir_ / name;
    const int fd = ::open((dir_ / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) setup_fail("cannot lock " + (dir_ / ".lock").string());
    try {
      if (!fs::exists(final_path)) {
        const std::string stamp = std::to_string(::getpid());
        const fs::path building = dir_ / (".building-" + stamp + "-" + name);
        const fs::path log = dir_ / (".log-" + stamp + "-" + name);
        std::error_code ignored;
        fs::remove_all(building, ignored);
        build(building, log);
        fs::rename(building, final_path);
        fs::remove(log, ignored);
      }
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
    return final_path;
  }

  fs::path dir_;
};

// ---- one case ------------------------------------------------------------------------

// The folders of one case. Placeholders in commands and paths: {in} {out} {root} {cwd}
// {shared} (Shared's folder), {outside} (ROOT's parent), {pid} (this process) and
// whatever the setup puts in vars (e.g. {md5}).
struct Ctx {
  explicit Ctx(const fs::path& r) : root(r), in(r / "in"), out(r / "out"), cwd(r / "cwd") {
    for (const fs::path& d : {in, out, cwd, root / "tmp", root / "logs"}) fs::create_directories(d);
  }
  fs::path root, in, out, cwd;
  std::vector<fs::path> extra_inputs;  // inputs outside `in` that the command reads (checked too)
  std::map<std::string, std::string> vars;

  std::string expand(std::string text) const {
    std::map<std::string, std::string> all = vars;
    all["in"] = in.string();
    all["out"] = out.string();
    all["root"] = root.string();
    all["cwd"] = cwd.string();
    all["outside"] = root.parent_path().string();
    all["pid"] = std::to_string(::getpid());
    if (text.find("{shared}") != std::string::npos) all["shared"] = Shared::get().dir().string();
    for (const auto& [key, value] : all) {
      const std::string token = "{" + key + "}";
      for (size_t at = text.find(token); at != std::string::npos; at = text.find(token, at + value.size())) {
        text.replace(at, token.size(), value);
      }
    }
    return text;
  }
};

struct Case {
  std::string name;
  std::function<void(Ctx&)> setup;
  std::string command;                // "transfer-STAGE flags...", with placeholders
  std::set<int> codes;                // the exit codes the contract allows
  std::vector<std::string> needles;   // each must be in the error text; "a|b": either
  std::vector<std::string> absent;    // must not exist afterwards (placeholders allowed)
  int timeout_s = 120;
  bool mem_cap = false;               // run under `ulimit -v` 4 GiB (a bug would allocate without bound)
  long file_limit = 0;                // > 0: no file may grow past this many 512-byte blocks (a full disk)

  // May block on a FIFO or read /dev/zero forever if the stage is broken.
  Case& may_hang() {
    timeout_s = 20;
    return *this;
  }
  Case& capped() {
    mem_cap = true;
    return *this;
  }
  // Writes past `blocks` x 512 bytes fail with EFBIG (SIGXFSZ ignored), as on a full disk.
  Case& disk_full(long blocks) {
    file_limit = blocks;
    return *this;
  }
};

void PrintTo(const Case& c, std::ostream* out) { *out << c.name; }

// ---- command lines ---------------------------------------------------------------------

// An ordered list of flags; with() replaces a flag's value or appends it, a value
// starting with '=' is glued to the flag ("--lr=-1"), "" makes a bare flag.
class Flags {
 public:
  Flags(std::string stage, std::vector<std::pair<std::string, std::string>> flags)
      : stage_(std::move(stage)), flags_(std::move(flags)) {}
  Flags with(const std::string& flag, const std::string& value = "") const {
    Flags out = *this;
    for (auto& f : out.flags_) {
      if (f.first == flag) {
        f.second = value;
        return out;
      }
    }
    out.flags_.emplace_back(flag, value);
    return out;
  }
  Flags without(const std::string& flag) const {
    Flags out = *this;
    for (auto it = out.flags_.begin(); it != out.flags_.end(); ++it) {
      if (it->first == flag) {
        out.flags_.erase(it);
        break;
      }
    }
    return out;
  }
  std::string str() const {
    std::string text = "transfer-" + stage_;
    for (const auto& [flag, value] : flags_) {
      text += " " + flag;
      if (value.empty()) continue;
      text += value.front() == '=' ? value : " " + value;
    }
    return text;
  }
  operator std::string() const { return str(); }

 private:
  std::string stage_;
  std::vector<std::pair<std::string, std::string>> flags_;
};

const Flags kFetch("fetch", {{"--out", "{out}/data"},
                             {"--archive", "{in}/cifar.tar.gz"},
                             {"--md5", "{md5}"},
                             {"--skip-weights", ""},
                             {"--retries", "0"},
                             {"--no-progress", ""}});
const Flags kSynth("synth", {{"--out", "{out}/data"}, {"--train", "5"}, {"--test", "1"}, {"--seed", "1"}});
const Flags kExtract("extract", {{"--data", "{in}/data"},
                                 {"--weights", "random:0"},
                                 {"--out", "{out}/cache.h5"},
                                 {"--image-size", "64"},
                                 {"--limit-train", "40"},
                                 {"--limit-test", "10"},
                                 {"--batch-size", "20"},
                                 {"--device", "cpu"},
                                 {"--threads", "1"}});
const Flags kHead("head", {{"--features", "{in}/cache.h5"},
                           {"--out", "{out}/head"},
                           {"--epochs", "1"},
                           {"--batch-size", "16"},
                           {"--threads", "1"}});
// The settings of the checkpoint the --resume cases corrupt, and of their resume.
const Flags kFinetune("finetune", {{"--data", "{shared}/data"},
                                   {"--weights", "random:0"},
                                   {"--out", "{in}/run"},
                                   {"--epochs", "2"},
                                   {"--image-size", "64"},
                                   {"--batch-size", "16"},
                                   {"--limit-train", "40"},
                                   {"--limit-test", "10"},
                                   {"--device", "cpu"},
                                   {"--threads", "1"}});
const Flags kResume = kFinetune.with("--resume");
const Flags kFinetuneFlags = kFinetune.with("--data", "{in}/data").with("--out", "{out}/run").with("--epochs", "1");
const Flags kCompare("compare", {{"--head", "{in}/head"},
                                 {"--finetune", "{in}/finetune"},
                                 {"--out", "{out}/compare"},
                                 {"--extract-seconds", "1"},
                                 {"--gnuplot", "''"}});

// A failed fetch leaves not even the (empty) --out folder it made.
const std::vector<std::string> kNoCifar = {"{out}/data/cifar-10-batches-bin/.verified", "{out}/data/cifar-10-batches-bin",
                                          "{out}/data"};
const std::vector<std::string> kNoCache = {"{out}/cache.h5"};
// A failed run leaves nothing in its folder, not even the lock it took (FolderLock).
const std::vector<std::string> kNoHeadRun = {"{out}/head/config.json", "{out}/head/metrics.json", "{out}/head/head.pt",
                                             "{out}/head/.lock"};
const std::vector<std::string> kNoResumed = {"{in}/run/config.json", "{in}/run/metrics.json", "{in}/run/model.pt"};
const std::vector<std::string> kNoFinetuneRun = {"{out}/run/config.json", "{out}/run/metrics.json",
                                                 "{out}/run/checkpoint-config.json", "{out}/run/.lock"};
// A failed comparison leaves no report, and not the folder it made for one.
const std::vector<std::string> kNoReport = {"{out}/compare/report.md", "{out}/compare/report.json", "{out}/compare"};

std::vector<std::string> plus(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---- setups ------------------------------------------------------------------------------

void write_archive(Ctx& ctx, const std::vector<Entry>& entries, const fs::path& file) {
  testutil::write_tar_gz(file, entries);
  if (::testing::Test::HasFatalFailure()) setup_fail("cannot write the archive " + file.string());
  ctx.vars["md5"] = pipeline::file_digest(file, pipeline::DigestAlgorithm::Md5);
}

// A setup that writes {in}/cifar.tar.gz from the official layout after `edit`.
std::function<void(Ctx&)> with_archive(std::function<void(std::vector<Entry>&, Ctx&)> edit, int64_t records = 3) {
  return [edit, records](Ctx& ctx) {
    std::vector<Entry> entries = cifar_entries(records);
    edit(entries, ctx);
    write_archive(ctx, entries, ctx.in / "cifar.tar.gz");
  };
}

const auto kGoodArchive = with_archive([](std::vector<Entry>&, Ctx&) {});

// {in}/data: a copy of the shared synthetic CIFAR folder, then `edit`.
std::function<void(Ctx&)> with_data(std::function<void(const fs::path& dir, Ctx&)> edit = {}) {
  return [edit](Ctx& ctx) {
    copy_tree(Shared::get().data(), ctx.in / "data");
    if (edit) edit(ctx.in / "data", ctx);
  };
}

// {in}/cache.h5: a copy of the shared feature cache, then `edit`.
std::function<void(Ctx&)> with_cache(std::function<void(Ctx&)> edit = {}) {
  return [edit](Ctx& ctx) {
    fs::copy_file(Shared::get().cache(), ctx.in / "cache.h5");
    if (edit) edit(ctx);
  };
}

// {in}/run: a real fine-tuning checkpoint (transfer-finetune --stop-after 1 with
// kFinetune's settings), then `edit` of {in}/run/checkpoint. The shared data folder it
// reads is an input too.
std::function<void(Ctx&)> with_checkpoint(std::function<void(const fs::path& checkpoint_dir, Ctx&)> edit) {
  return [edit](Ctx& ctx) {
    Shared::get().data();
    ctx.extra_inputs.push_back(Shared::get().dir() / "data");
    run_ok(ctx.expand(kFinetune.with("--stop-after", "1").str()), ctx.root / "logs" / "checkpoint.log");
    const fs::path dir = ctx.in / "run" / "checkpoint";
    for (const char* file : {"loop.json", "model.pt", "optimizer.pt", "best.pt", "rng.pt"}) {
      if (!fs::is_regular_file(dir / file)) setup_fail("the checkpoint has no " + std::string(file) + ": the layout changed?");
    }
    if (!fs::exists(ctx.in / "run" / "checkpoint-config.json")) setup_fail("no checkpoint-config.json beside the checkpoint");
    fs::remove(ctx.root / "logs" / "checkpoint.log");
    edit(dir, ctx);
  };
}

// {in}/head and {in}/finetune: copies of the shared runs, then `edit`.
std::function<void(Ctx&)> with_runs(std::function<void(Ctx&)> edit = {}) {
  return [edit](Ctx& ctx) {
    copy_tree(Shared::get().head_run(), ctx.in / "head");
    copy_tree(Shared::get().finetune_run(), ctx.in / "finetune");
    if (edit) edit(ctx);
  };
}

void nothing(Ctx&) {}

// ---- the corpus ------------------------------------------------------------------------------

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  auto add = [&](Case c) -> Case& {
    cases.push_back(std::move(c));
    return cases.back();
  };
  const std::set<int> one{1}, two{2}, either{1, 2};

  // ---- transfer-fetch: the archive, the weights file, --out, flags
  add({"fetch_archive_not_gzip_or_tar",
       [](Ctx& ctx) {
         write_file(ctx.in / "cifar.tar.gz", testutil::random_bytes(5000, 1));
         ctx.vars["md5"] = pipeline::file_digest(ctx.in / "cifar.tar.gz", pipeline::DigestAlgorithm::Md5);
       },
       kFetch, one, {"cifar.tar.gz"}, kNoCifar});
  add({"fetch_archive_truncated",
       [](Ctx& ctx) {
         write_archive(ctx, cifar_entries(20), ctx.in / "cifar.tar.gz");
         fs::resize_file(ctx.in / "cifar.tar.gz", fs::file_size(ctx.in / "cifar.tar.gz") / 2);
         ctx.vars["md5"] = pipeline::file_digest(ctx.in / "cifar.tar.gz", pipeline::DigestAlgorithm::Md5);
       },
       kFetch, one, {"cifar.tar.gz"}, kNoCifar});
  add({"fetch_wrong_md5", kGoodArchive, kFetch.with("--md5", "0123456789abcdef0123456789abcdef"), one,
       {"cifar.tar.gz"}, kNoCifar});
  add({"fetch_malformed_md5", kGoodArchive, kFetch.with("--md5", "xyz"), two, {"--md5"}, kNoCifar});
  add({"fetch_entry_with_dotdot",
       with_archive([](std::vector<Entry>& e, Ctx&) {
         e.push_back({kTop + "../../../escape-dotdot.bin", "escaped"});
       }),
       kFetch, one, {"escape-dotdot.bin"},
       plus(kNoCifar, {"{out}/escape-dotdot.bin", "{out}/data/escape-dotdot.bin", "{root}/escape-dotdot.bin"})});
  add({"fetch_entry_with_absolute_path",
       with_archive([](std::vector<Entry>& e, Ctx& ctx) {
         e.push_back({ctx.expand("{outside}/transfer_hostile_abs_{pid}.bin"), "escaped"});
       }),
       kFetch, one, {"transfer_hostile_abs_"}, plus(kNoCifar, {"{outside}/transfer_hostile_abs_{pid}.bin"})});
  // up -> .. points at the unpack folder, x -> up/.. at its parent: each link looks
  // harmless lexically, together they lead out. Any link is refused.
  add({"fetch_symlink_chain_escaping",
       with_archive([](std::vector<Entry>& e, Ctx&) {
         e.push_back({kTop + "up", "..", Entry::Symlink});
         e.push_back({kTop + "x", "up/..", Entry::Symlink});
         e.push_back({kTop + "x/escaped.bin", "escaped"});
       }),
       kFetch, one, {"cifar-10-batches-bin/up"}, plus(kNoCifar, {"{out}/data/escaped.bin", "{out}/escaped.bin"})});
  add({"fetch_symlink_to_absolute_target",
       with_archive([](std::vector<Entry>& e, Ctx&) {
         drop_entry(e, kTop + "data_batch_1.bin");
         e.push_back({kTop + "data_batch_1.bin", "/etc/passwd", Entry::Symlink});
       }),
       kFetch, one, {"data_batch_1.bin"}, kNoCifar});
  add({"fetch_symlink_inside_the_folder",
       with_archive([](std::vector<Entry>& e, Ctx&) {
         drop_entry(e, kTop + "data_batch_5.bin");
         e.push_back({kTop + "data_batch_5.bin", "data_batch_4.bin", Entry::Symlink});
       }),
       kFetch, one, {"data_batch_5.bin"}, kNoCifar});
  add({"fetch_hardlink_inside_the_folder",
       with_archive([](std::vector<Entry>& e, Ctx&) {
         drop_entry(e, kTop + "data_batch_5.bin");
         e.push_back({kTop + "data_batch_5.bin", kTop + "data_batch_4.bin", Entry::Hardlink});
       }),
       kFetch, one, {"data_batch_5.bin"}, kNoCifar});
  add({"fetch_unexpected_entry_in_the_folder",
       with_archive([](std::vector<Entry>& e, Ctx&) { e.push_back({kTop + "extra.bin", cifar_records(1, 7)}); }), kFetch,
       one, {"extra.bin"}, kNoCifar});
  add({"fetch_second_top_folder",
       with_archive([](std::vector<Entry>& e, Ctx&) {
         e.push_back({"stowaway/", "", Entry::Dir});
         e.push_back({"stowaway/notes.txt", "not CIFAR-10\n"});
       }),
       kFetch, one, {"stowaway"}, plus(kNoCifar, {"{out}/data/stowaway"})});
  add({"fetch_batch_of_wrong_size",
       with_archive([](std::vector<Entry>& e, Ctx&) { entry(e, kTop + "data_batch_2.bin").data += "x"; }), kFetch, one,
       {"data_batch_2.bin"}, kNoCifar});
  // 10,001 records: more than any CIFAR-10 batch file holds (zeros: label 0, compresses).
  add({"fetch_batch_over_10000_records",
       with_archive([](std::vector<Entry>& e, Ctx&) { entry(e, kTop + "data_batch_3.bin").data = std::string(10001 * 3073, '\0'); }),
       kFetch, one, {"data_batch_3.bin"}, kNoCifar});
  add({"fetch_batch_missing", with_archive([](std::vector<Entry>& e, Ctx&) { drop_entry(e, kTop + "test_batch.bin"); }),
       kFetch, one, {"test_batch.bin"}, kNoCifar});
  add({"fetch_archive_is_a_fifo", [](Ctx& ctx) { make_fifo(ctx.in / "fifo.tar.gz"); },
       kFetch.with("--archive", "{in}/fifo.tar.gz").with("--md5", "0123456789abcdef0123456789abcdef"), one,
       {"fifo.tar.gz"}, kNoCifar})
      .may_hang();
  add({"fetch_archive_links_to_dev_zero", [](Ctx& ctx) { make_symlink(ctx.in / "zero.tar.gz", "/dev/zero"); },
       kFetch.with("--archive", "{in}/zero.tar.gz").with("--md5", "0123456789abcdef0123456789abcdef"), one,
       {"zero.tar.gz"}, kNoCifar})
      .may_hang();
  add({"fetch_weights_file_links_to_dev_zero",
       [](Ctx& ctx) {
         kGoodArchive(ctx);
         make_symlink(ctx.in / "linked-7be5be79.pth", "/dev/zero");
       },
       kFetch.without("--skip-weights").with("--weights-file", "{in}/linked-7be5be79.pth"), one,
       {"linked-7be5be79.pth"}, {"{out}/data/linked-7be5be79.pth"}})
      .may_hang();
  add({"fetch_weights_file_is_a_fifo",
       [](Ctx& ctx) {
         kGoodArchive(ctx);
         make_fifo(ctx.in / "pipe-7be5be79.pth");
       },
       kFetch.without("--skip-weights").with("--weights-file", "{in}/pipe-7be5be79.pth"), one, {"pipe-7be5be79.pth"},
       {"{out}/data/pipe-7be5be79.pth"}})
      .may_hang();
  add({"fetch_out_is_a_regular_file",
       [](Ctx& ctx) {
         kGoodArchive(ctx);
         write_file(ctx.in / "occupied", "a user's file\n");
       },
       kFetch.with("--out", "{in}/occupied"), one, {"occupied"}, {}});
  add({"fetch_unknown_flag", kGoodArchive, kFetch.with("--no-such-flag"), two, {"--no-such-flag"}, kNoCifar});
  add({"fetch_retries_not_a_number", kGoodArchive, kFetch.with("--retries", "abc"), two, {"--retries"}, kNoCifar});
  add({"fetch_negative_timeout", kGoodArchive, kFetch.with("--timeout", "=-5"), two, {"--timeout"}, kNoCifar});

  // ---- transfer-synth: --out over the user's folders, counts, flags
  auto foreign = [](Ctx& ctx) { write_file(ctx.in / "mine" / "notes.txt", "the user's notes\n"); };
  add({"synth_out_dot_in_a_foreign_folder",
       [](Ctx& ctx) {
         write_file(ctx.in / "notes" / "notes.txt", "the user's notes\n");
         ctx.cwd = ctx.in / "notes";
       },
       kSynth.with("--out", "."), one, {"current folder"}, {"{in}/notes/data_batch_1.bin"}});
  add({"synth_out_existing_foreign_folder", foreign, kSynth.with("--out", "{in}/mine"), one, {"notes.txt"},
       {"{in}/mine/data_batch_1.bin"}});
  add({"synth_out_foreign_folder_trailing_slash", foreign, kSynth.with("--out", "{in}/mine/"), one, {"notes.txt"},
       {"{in}/mine/data_batch_1.bin"}});
  add({"synth_out_foreign_folder_slash_dot", foreign, kSynth.with("--out", "{in}/mine/."), one, {"notes.txt"},
       {"{in}/mine/data_batch_1.bin"}});
  add({"synth_out_is_a_regular_file", [](Ctx& ctx) { write_file(ctx.in / "occupied", "a user's file\n"); },
       kSynth.with("--out", "{in}/occupied"), one, {"occupied"}, {}});
  add({"synth_train_more_than_cifar", nothing, kSynth.with("--train", "100000"), two, {"--train"}, {"{out}/data"}});
  add({"synth_test_zero", nothing, kSynth.with("--test", "0"), two, {"--test"}, {"{out}/data"}});
  add({"synth_train_not_a_number", nothing, kSynth.with("--train", "abc"), two, {"--train"}, {"{out}/data"}});
  add({"synth_unknown_flag", nothing, kSynth.with("--no-such-flag"), two, {"--no-such-flag"}, {"{out}/data"}});

  // ---- transfer-extract: the CIFAR folder, the weights, --out, flags
  add({"extract_batch_links_to_dev_zero",
       with_data([](const fs::path& d, Ctx&) { make_symlink(d / "data_batch_3.bin", "/dev/zero"); }), kExtract, one,
       {"data_batch_3.bin"}, kNoCache})
      .may_hang();
  add({"extract_batch_is_a_fifo", with_data([](const fs::path& d, Ctx&) {
         fs::remove(d / "test_batch.bin");
         make_fifo(d / "test_batch.bin");
       }),
       kExtract, one, {"test_batch.bin"}, kNoCache})
      .may_hang();
  add({"extract_label_byte_10", with_data([](const fs::path& d, Ctx&) {
         std::string bytes = read_all(d / "data_batch_1.bin");
         bytes[0] = 10;
         replace_file(d / "data_batch_1.bin", bytes);
       }),
       kExtract, one, {"data_batch_1.bin"}, kNoCache});
  add({"extract_truncated_batch",
       with_data([](const fs::path& d, Ctx&) { fs::resize_file(d / "data_batch_2.bin", fs::file_size(d / "data_batch_2.bin") - 1); }),
       kExtract, one, {"data_batch_2.bin"}, kNoCache});
  // Sparse: 10,001 records cost nothing on disk.
  add({"extract_batch_over_10000_records",
       with_data([](const fs::path& d, Ctx&) { fs::resize_file(d / "data_batch_4.bin", 10001 * 3073); }), kExtract, one,
       {"data_batch_4.bin"}, kNoCache});
  add({"extract_batch_is_a_folder", with_data([](const fs::path& d, Ctx&) {
         fs::remove(d / "data_batch_5.bin");
         fs::create_directories(d / "data_batch_5.bin");
       }),
       kExtract, one, {"data_batch_5.bin"}, kNoCache});
  add({"extract_batch_missing", with_data([](const fs::path& d, Ctx&) { fs::remove(d / "test_batch.bin"); }), kExtract, one,
       {"test_batch.bin"}, kNoCache});
  add({"extract_data_folder_missing", nothing, kExtract.with("--data", "{in}/nowhere"), one, {"nowhere"}, kNoCache});
  add({"extract_image_size_huge", with_data(), kExtract.with("--image-size", "100000"), two, {"--image-size"}, kNoCache})
      .capped();
  add({"extract_image_size_too_small", with_data(), kExtract.with("--image-size", "10"), two, {"--image-size"}, kNoCache});
  add({"extract_weights_not_a_zip",
       with_data([](const fs::path&, Ctx& ctx) { write_file(ctx.in / "weights.pth", testutil::random_bytes(4096, 2)); }),
       kExtract.with("--weights", "{in}/weights.pth"), one, {"weights.pth"}, kNoCache});
  add({"extract_weights_truncated_zip", with_data([](const fs::path&, Ctx& ctx) {
         const std::string whole = read_all(testutil::fixture("tiny_state_dict.pth"));
         if (whole.size() < 1000) setup_fail("the fixture tiny_state_dict.pth is missing");
         write_file(ctx.in / "truncated.pth", whole.substr(0, whole.size() / 2));
       }),
       kExtract.with("--weights", "{in}/truncated.pth"), one, {"truncated.pth"}, kNoCache});
  add({"extract_weights_is_a_folder",
       with_data([](const fs::path&, Ctx& ctx) { fs::create_directories(ctx.in / "weights_dir.pth"); }),
       kExtract.with("--weights", "{in}/weights_dir.pth"), one, {"weights_dir.pth"}, kNoCache});
  add({"extract_weights_dev_zero", with_data(), kExtract.with("--weights", "/dev/zero"), one, {"/dev/zero"}, kNoCache})
      .may_hang();
  add({"extract_weights_is_a_fifo", with_data([](const fs::path&, Ctx& ctx) { make_fifo(ctx.in / "fifo.pth"); }),
       kExtract.with("--weights", "{in}/fifo.pth"), one, {"fifo.pth"}, kNoCache})
      .may_hang();
  add({"extract_weights_missing", with_data(), kExtract.with("--weights", "{in}/none.pth"), one, {"none.pth"}, kNoCache});
  add({"extract_out_inside_the_data_folder", with_data(), kExtract.with("--out", "{in}/data/cache.h5"), two, {"--out"},
       {"{in}/data/cache.h5", "{in}/data/cache.h5.partial"}});
  add({"extract_out_is_a_batch_file", with_data(), kExtract.with("--out", "{in}/data/data_batch_1.bin"), either,
       {"data_batch_1.bin"}, {"{in}/data/data_batch_1.bin.partial"}});
  // --out naming a file of the user's (not HDF5): never replaced by the cache.
  add({"extract_out_is_a_users_file", with_data([](const fs::path&, Ctx& ctx) { write_file(ctx.in / "notes.h5", "mine\n"); }),
       kExtract.with("--out", "{in}/notes.h5"), one, {"notes.h5"}, {"{in}/notes.h5.partial"}});
  add({"extract_out_ends_in_a_slash", with_data(), kExtract.with("--out", "{out}/newcache/"), two, {"names a folder"},
       {"{out}/newcache"}});
  add({"extract_unknown_tap", with_data(), kExtract.with("--taps", "fc9"), two, {"fc9"}, kNoCache});
  add({"extract_unknown_flag", with_data(), kExtract.with("--no-such-flag"), two, {"--no-such-flag"}, kNoCache});
  add({"extract_threads_not_a_number", with_data(), kExtract.with("--threads", "abc"), two, {"--threads"}, kNoCache});
  add({"extract_negative_batch_size", with_data(), kExtract.with("--batch-size", "=-1"), two, {"--batch-size"}, kNoCache});

  // ---- transfer-head: the cache, --out, flags
  add({"head_cache_missing", nothing, kHead.with("--features", "{in}/none.h5"), one, {"none.h5"}, kNoHeadRun});
  add({"head_cache_not_hdf5", [](Ctx& ctx) { write_file(ctx.in / "random.h5", testutil::random_bytes(100000, 3)); },
       kHead.with("--features", "{in}/random.h5"), one, {"random.h5"}, kNoHeadRun});
  add({"head_cache_truncated", [](Ctx& ctx) {
         const std::string whole = read_all(Shared::get().cache());
         write_file(ctx.in / "half.h5", whole.substr(0, whole.size() / 2));
       },
       kHead.with("--features", "{in}/half.h5"), one, {"half.h5"}, kNoHeadRun});
  add({"head_cache_is_a_folder", [](Ctx& ctx) { fs::create_directories(ctx.in / "folder.h5"); },
       kHead.with("--features", "{in}/folder.h5"), one, {"folder.h5"}, kNoHeadRun});
  add({"head_cache_is_a_fifo", [](Ctx& ctx) { make_fifo(ctx.in / "fifo.h5"); }, kHead.with("--features", "{in}/fifo.h5"),
       one, {"fifo.h5"}, kNoHeadRun})
      .may_hang();
  add({"head_cache_links_to_dev_zero", [](Ctx& ctx) { make_symlink(ctx.in / "zero.h5", "/dev/zero"); },
       kHead.with("--features", "{in}/zero.h5"), one, {"zero.h5"}, kNoHeadRun})
      .may_hang();
  add({"head_only_a_partial_cache", [](Ctx& ctx) { fs::copy_file(Shared::get().cache(), ctx.in / "cache.h5.partial"); },
       kHead, one, {"cache.h5"}, kNoHeadRun});
  add({"head_out_is_the_cache", with_cache(), kHead.with("--out", "{in}/cache.h5"), either, {"cache.h5"}, {}});
  add({"head_sweep_seeds_huge", with_cache(), kHead.with("--sweep-seeds", "100000"), two, {"--sweep-seeds"}, kNoHeadRun})
      .capped();
  // A full disk while writing head.pt (160 KB; the limit is 64 KB): exit 1 naming it,
  // no abort from LibTorch's stream writer, no temporary, no finished marker.
  add({"head_disk_full_at_head_pt", with_cache(), kHead, one, {"head.pt"}, {"{out}/head/config.json", "{out}/head/head.pt"}})
      .disk_full(128);
  // --out naming a folder of the user's (no .lock: no run of ours was there) that holds
  // files of a run's names: never overwritten or removed.
  add({"head_out_is_a_users_folder", with_cache([](Ctx& ctx) {
         write_file(ctx.in / "mine" / "metrics.json", "{\"my\": \"thesis\"}\n");
         write_file(ctx.in / "mine" / "notes.txt", "mine\n");
       }),
       kHead.with("--out", "{in}/mine"), one, {"metrics.json", ".lock"}, {}});
  add({"head_out_holds_a_users_sweep_csv", with_cache([](Ctx& ctx) { write_file(ctx.in / "mine" / "sweep.csv", "a,b\n"); }),
       kHead.with("--out", "{in}/mine"), one, {"sweep.csv"}, {}});
  add({"head_epochs_zero", with_cache(), kHead.with("--epochs", "0"), two, {"--epochs"}, kNoHeadRun});
  add({"head_lr_negative", with_cache(), kHead.with("--lr", "=-1"), two, {"--lr"}, kNoHeadRun});
  add({"head_lr_nan", with_cache(), kHead.with("--lr", "nan"), two, {"--lr"}, kNoHeadRun});
  add({"head_lr_infinite", with_cache(), kHead.with("--lr", "inf"), two, {"--lr"}, kNoHeadRun});
  add({"head_sweep_lr_infinite", with_cache(), kHead.with("--sweep-lr", "1e-3,inf"), two, {"--sweep-lr"}, kNoHeadRun});
  // --config: a FIFO would block CLI11's reader forever, a key that names no flag (a
  // typo) would silently leave its setting at the default.
  add({"head_config_is_a_fifo", with_cache([](Ctx& ctx) { make_fifo(ctx.in / "flags.toml"); }),
       kHead.with("--config", "{in}/flags.toml"), two, {"flags.toml"}, kNoHeadRun})
      .may_hang();
  add({"head_config_unknown_key", with_cache([](Ctx& ctx) { write_file(ctx.in / "flags.toml", "epoch = 1\n"); }),
       kHead.with("--config", "{in}/flags.toml"), two, {"epoch"}, kNoHeadRun});
  add({"head_val_fraction_above_one", with_cache(), kHead.with("--val-fraction", "1.5"), two, {"--val-fraction"},
       kNoHeadRun});
  add({"head_unknown_flag", with_cache(), kHead.with("--no-such-flag"), two, {"--no-such-flag"}, kNoHeadRun});
  add({"head_threads_not_a_number", with_cache(), kHead.with("--threads", "abc"), two, {"--threads"}, kNoHeadRun});
  add({"head_negative_batch_size", with_cache(), kHead.with("--batch-size", "=-1"), two, {"--batch-size"}, kNoHeadRun});

  // ---- transfer-finetune: the checkpoint of --resume, the data, --out, flags
  add({"finetune_resume_truncated_model_pt", with_checkpoint([](const fs::path& c, Ctx&) {
         fs::resize_file(c / "model.pt", fs::file_size(c / "model.pt") / 2);  // this case's own fresh file
       }),
       kResume, one, {"model.pt", "--resume"}, kNoResumed});
  add({"finetune_resume_foreign_rng_pt",
       with_checkpoint([](const fs::path& c, Ctx&) { replace_file(c / "rng.pt", testutil::random_bytes(6000, 4)); }), kResume,
       one, {"rng.pt", "--resume"}, kNoResumed});
  add({"finetune_resume_optimizer_pt_is_a_fifo", with_checkpoint([](const fs::path& c, Ctx&) {
         fs::remove(c / "optimizer.pt");
         make_fifo(c / "optimizer.pt");
       }),
       kResume, one, {"optimizer.pt"}, kNoResumed})
      .may_hang();
  // 99 epochs done of 2: the run must not report itself finished.
  add({"finetune_resume_loop_json_epochs_done_99",
       with_checkpoint([](const fs::path& c, Ctx&) { edit_json(c / "loop.json", [](json& j) { j["epochs_done"] = 99; }); }),
       kResume, one, {"loop.json"}, kNoResumed});
  add({"finetune_resume_loop_json_invalid",
       with_checkpoint([](const fs::path& c, Ctx&) { replace_file(c / "loop.json", "{\"epochs_done\": 1, \"members\": ["); }),
       kResume, one, {"loop.json"}, kNoResumed});
  // A full disk at the first checkpoint (model.pt is ~230 MB; the limit is 64 MB).
  add({"finetune_disk_full_at_the_checkpoint", with_data(), kFinetuneFlags, one, {"model.pt"},
       {"{out}/run/config.json", "{out}/run/metrics.json", "{out}/run/checkpoint"}})
      .disk_full(131072);
  add({"finetune_data_folder_missing", nothing, kFinetuneFlags.with("--data", "{in}/nowhere"), one, {"nowhere"},
       kNoFinetuneRun});
  add({"finetune_out_is_a_batch_file", with_data(), kFinetuneFlags.with("--out", "{in}/data/data_batch_1.bin"), either,
       {"data_batch_1.bin"}, {}});
  add({"finetune_epochs_zero", with_data(), kFinetuneFlags.with("--epochs", "0"), two, {"--epochs"}, kNoFinetuneRun});
  add({"finetune_lr_nan", with_data(), kFinetuneFlags.with("--lr", "nan"), two, {"--lr"}, kNoFinetuneRun});
  add({"finetune_lr_infinite", with_data(), kFinetuneFlags.with("--lr", "inf"), two, {"--lr"}, kNoFinetuneRun});
  // --out naming the data's folder: the run's files would land among the batch files.
  add({"finetune_out_is_the_data_folder", with_data(), kFinetuneFlags.with("--out", "{in}/data"), two,
       {"data_batch_1.bin|data"}, {"{in}/data/config.json", "{in}/data/checkpoint-config.json", "{in}/data/.lock"}});
  add({"finetune_out_is_a_users_folder", with_data([](const fs::path&, Ctx& ctx) {
         write_file(ctx.in / "mine" / "model.pt", "my own model\n");
       }),
       kFinetuneFlags.with("--out", "{in}/mine"), one, {"model.pt", ".lock"}, {}});
  add({"finetune_image_size_too_small", with_data(), kFinetuneFlags.with("--image-size", "10"), two, {"--image-size"},
       kNoFinetuneRun});
  add({"finetune_unknown_flag", with_data(), kFinetuneFlags.with("--no-such-flag"), two, {"--no-such-flag"},
       kNoFinetuneRun});
  add({"finetune_threads_not_a_number", with_data(), kFinetuneFlags.with("--threads", "abc"), two, {"--threads"},
       kNoFinetuneRun});
  add({"finetune_negative_batch_size", with_data(), kFinetuneFlags.with("--batch-size", "=-1"), two, {"--batch-size"},
       kNoFinetuneRun});

  // ---- transfer-compare: the run folders, --out, flags
  add({"compare_finetune_run_without_config_json", with_runs([](Ctx& ctx) { fs::remove(ctx.in / "finetune" / "config.json"); }),
       kCompare, one, {"config.json"}, kNoReport});
  add({"compare_head_run_without_config_json", with_runs([](Ctx& ctx) { fs::remove(ctx.in / "head" / "config.json"); }),
       kCompare, one, {"config.json"}, kNoReport});
  add({"compare_metrics_json_invalid",
       with_runs([](Ctx& ctx) { replace_file(ctx.in / "head" / "metrics.json", "{\"approach\": \"linear-probe\", "); }),
       kCompare, one, {"metrics.json"}, kNoReport});
  add({"compare_best_epoch_1e300", with_runs([](Ctx& ctx) {
         edit_json(ctx.in / "finetune" / "metrics.json", [](json& j) { j["best_epoch"] = 1e300; });
       }),
       kCompare, one, {"metrics.json"}, kNoReport});
  add({"compare_negative_train_seconds", with_runs([](Ctx& ctx) {
         edit_json(ctx.in / "head" / "metrics.json", [](json& j) { j["train_seconds"] = -3; });
       }),
       kCompare, one, {"train_seconds"}, kNoReport});
  add({"compare_train_seconds_1e308", with_runs([](Ctx& ctx) {
         edit_json(ctx.in / "finetune" / "metrics.json", [](json& j) { j["train_seconds"] = 1e308; });
       }),
       kCompare, one, {"train_seconds"}, kNoReport});
  add({"compare_image_size_1e300", with_runs([](Ctx& ctx) {
         edit_json(ctx.in / "finetune" / "metrics.json", [](json& j) { j["settings"]["image_size"] = 1e300; });
         edit_json(ctx.in / "finetune" / "config.json", [](json& j) { j["image_size"] = 1e300; });
       }),
       kCompare, one, {"metrics.json|config.json"}, kNoReport});
  add({"compare_metrics_json_links_to_dev_zero",
       with_runs([](Ctx& ctx) { make_symlink(ctx.in / "finetune" / "metrics.json", "/dev/zero"); }), kCompare, one,
       {"metrics.json"}, kNoReport})
      .may_hang()
      .capped();
  add({"compare_sweep_csv_garbage",
       with_runs([](Ctx& ctx) { write_file(ctx.in / "head" / "sweep.csv", "rank,lr\nnot,numbers\n"); }), kCompare, one,
       {"sweep.csv"}, kNoReport});
  add({"compare_run_folder_missing", with_runs(), kCompare.with("--head", "{in}/nohead"), one, {"nohead"}, kNoReport});
  add({"compare_out_is_a_run_file", with_runs(), kCompare.with("--out", "{in}/head/metrics.json"), either, {"metrics.json"},
       {}});
  add({"compare_out_is_a_run_folder", with_runs(), kCompare.with("--out", "{in}/finetune"), either, {"--out"},
       {"{in}/finetune/report.md", "{in}/finetune/report.json"}});
  add({"compare_runs_swapped", with_runs(), kCompare.with("--head", "{in}/finetune").with("--finetune", "{in}/head"), two,
       {"--head"}, kNoReport});
  add({"compare_out_is_a_users_folder", with_runs([](Ctx& ctx) { write_file(ctx.in / "docs" / "report.md", "# mine\n"); }),
       kCompare.with("--out", "{in}/docs"), one, {"report.md", ".lock"}, {}});
  add({"compare_extract_seconds_nan", with_runs(), kCompare.with("--extract-seconds", "nan"), two, {"--extract-seconds"},
       kNoReport});
  add({"compare_backbones_lone_comma", with_runs(), Flags("compare", {{"--backbones", ","}, {"--out", "{out}/compare"}}),
       two, {"--backbones"}, kNoReport});
  add({"compare_unknown_flag", with_runs(), kCompare.with("--no-such-flag"), two, {"--no-such-flag"}, kNoReport});
  add({"compare_extract_seconds_not_a_number", with_runs(), kCompare.with("--extract-seconds", "abc"), two,
       {"--extract-seconds"}, kNoReport});
  add({"compare_extract_seconds_negative", with_runs(), kCompare.with("--extract-seconds", "=-1"), two,
       {"--extract-seconds"}, kNoReport});
  return cases;
}

// ---- running and checking ------------------------------------------------------------------

struct Outcome {
  int code = -1;           // the exit code, or 128 + signal
  std::string how;         // "" for a normal exit, else what happened
  std::string out, err;    // stdout, stderr
};

std::string quoted(const std::string& text) { return "'" + text + "'"; }

// Runs `command` (placeholders expanded) in ctx.cwd with TMPDIR=ROOT/tmp under
// `timeout`, stdin from /dev/null.
Outcome run_command(const Ctx& ctx, const std::string& command, int timeout_s, bool mem_cap, long file_limit = 0) {
  const fs::path logs = ctx.root / "logs";
  const fs::path script = logs / "run.sh", out = logs / "stdout.txt", err = logs / "stderr.txt";
  std::string text = "cd " + quoted(ctx.cwd.string()) + " || exit 97\n";
  text += "TMPDIR=" + quoted((ctx.root / "tmp").string()) + "; export TMPDIR\n";
  if (mem_cap) text += "ulimit -v 4194304 || exit 98\n";
  if (file_limit > 0) text += "trap '' XFSZ; ulimit -f " + std::to_string(file_limit) + " || exit 98\n";
  text += "exec " + std::string(TRANSFER_BIN) + "/" + command + "\n";
  write_file(script, text);
  const std::string line = "timeout -k 5 " + std::to_string(timeout_s) + " sh " + quoted(script.string()) +
                           " </dev/null >" + quoted(out.string()) + " 2>" + quoted(err.string());
  const int status = std::system(line.c_str());
  Outcome r;
  if (status == -1) {
    r.how = "could not be started";
  } else if (WIFEXITED(status)) {
    r.code = WEXITSTATUS(status);
    if (r.code == 124) r.how = "timed out after " + std::to_string(timeout_s) + " s (a hang: reading a FIFO or device?)";
    if (r.code == 97 || r.code == 98) r.how = "the harness's script failed before the stage ran";
  } else if (WIFSIGNALED(status)) {
    r.code = 128 + WTERMSIG(status);
    r.how = "killed by signal " + std::to_string(WTERMSIG(status));
  }
  r.out = fs::exists(out) ? read_all(out) : "";
  r.err = fs::exists(err) ? read_all(err) : "";
  return r;
}

// The error text: stderr from the first "[error]" line on; all of it when there is none.
std::string error_text(const std::string& err) {
  const size_t at = err.find("[error]");
  if (at == std::string::npos) return err;
  const size_t line = err.rfind('\n', at);
  return err.substr(line == std::string::npos ? 0 : line + 1);
}

bool contains_any(const std::string& text, const std::string& alternatives) {
  size_t start = 0;
  for (;;) {
    const size_t bar = alternatives.find('|', start);
    const std::string one = alternatives.substr(start, bar == std::string::npos ? std::string::npos : bar - start);
    if (!one.empty() && text.find(one) != std::string::npos) return true;
    if (bar == std::string::npos) return false;
    start = bar + 1;
  }
}

// ---- input snapshots

constexpr std::uintmax_t kHashLimit = 64u << 20;

uint64_t content_hash(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  uint64_t h = 14695981039346656037ull;
  std::vector<char> block(1 << 20);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    const std::streamsize n = in.gcount();
    for (std::streamsize i = 0; i < n; ++i) {
      h ^= static_cast<unsigned char>(block[static_cast<size_t>(i)]);
      h *= 1099511628211ull;
    }
  }
  return h;
}

// What an entry is, without following links or opening anything but regular files.
std::string describe(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "missing";
  if (S_ISDIR(st.st_mode)) return "folder";
  if (S_ISLNK(st.st_mode)) {
    std::error_code ec;
    return "link to " + fs::read_symlink(path, ec).string();
  }
  if (S_ISFIFO(st.st_mode)) return "fifo";
  if (!S_ISREG(st.st_mode)) return "special file";
  const auto size = static_cast<std::uintmax_t>(st.st_size);
  if (size > kHashLimit) {
    return "file of " + std::to_string(size) + " bytes, inode " + std::to_string(st.st_ino) + ", mtime " +
           std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ", ctime " +
           std::to_string(st.st_ctim.tv_sec) + "." + std::to_string(st.st_ctim.tv_nsec);
  }
  return "file of " + std::to_string(size) + " bytes, hash " + hex(content_hash(path));
}

using Snapshot = std::map<std::string, std::string>;

Snapshot snapshot(const fs::path& top) {
  Snapshot s;
  s[top.string()] = describe(top);
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(top, ec))) return s;
  for (fs::recursive_directory_iterator it(top, ec), end; !ec && it != end; it.increment(ec)) {
    s[it->path().string()] = describe(it->path());
  }
  return s;
}

std::string differences(const Snapshot& before, const Snapshot& after) {
  std::string out;
  for (const auto& [path, what] : before) {
    const auto it = after.find(path);
    if (it == after.end()) {
      out += "  removed: " + path + " (was " + what + ")\n";
    } else if (it->second != what) {
      out += "  changed: " + path + ": " + what + " -> " + it->second + "\n";
    }
  }
  for (const auto& [path, what] : after) {
    if (before.count(path) == 0) out += "  added: " + path + " (" + what + ")\n";
  }
  return out;
}

bool looks_temporary(const std::string& name) {
  auto ends_with = [&](const std::string& tail) {
    return name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
  };
  return name.find(".tmp") != std::string::npos || name.find(".partial") != std::string::npos || ends_with(".part") ||
         ends_with(".new") || ends_with(".old");
}

std::vector<std::string> entries_of(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  return names;
}

// Runs one case and checks (a)-(e) of the header; `codes` are the allowed exit codes.
void check_case(const Case& c, Ctx& ctx) {
  try {
    c.setup(ctx);
  } catch (const std::exception& e) {
    FAIL() << "setup of " << c.name << " failed: " << e.what();
  }
  if (::testing::Test::HasFatalFailure()) return;

  std::vector<fs::path> inputs{ctx.in};
  inputs.insert(inputs.end(), ctx.extra_inputs.begin(), ctx.extra_inputs.end());
  std::vector<Snapshot> before;
  for (const fs::path& input : inputs) before.push_back(snapshot(input));

  const std::string command = ctx.expand(c.command);
  SCOPED_TRACE("case " + c.name + ": " + command);
  const Outcome r = run_command(ctx, command, c.timeout_s, c.mem_cap, c.file_limit);
  const std::string shown = "\n--- stderr ---\n" + r.err + "--- stdout ---\n" + r.out;

  // (a) the exit code
  std::string allowed;
  for (int code : c.codes) allowed += (allowed.empty() ? "" : " or ") + std::to_string(code);
  EXPECT_TRUE(r.how.empty() && c.codes.count(r.code) == 1)
      << "exit code " << r.code << (r.how.empty() ? "" : " (" + r.how + ")") << ", expected " << allowed << shown;

  // (b) the error names what was wrong
  const std::string message = error_text(r.err);
  for (const std::string& needle : c.needles) {
    EXPECT_TRUE(contains_any(message, needle)) << "the error does not mention " << needle << shown;
  }

  // (c) no stack trace, no crash
  for (const char* trace : {"Exception raised from", "frame #", "terminate called", "Aborted", "Segmentation", "what():"}) {
    EXPECT_EQ(r.err.find(trace), std::string::npos) << "stderr holds \"" << trace << "\"" << shown;
    EXPECT_EQ(r.out.find(trace), std::string::npos) << "stdout holds \"" << trace << "\"" << shown;
  }

  // (d) inputs untouched, nothing created outside ROOT
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string diff = differences(before[i], snapshot(inputs[i]));
    EXPECT_TRUE(diff.empty()) << "the inputs under " << inputs[i].string() << " changed:\n" << diff << shown;
  }
  const std::set<std::string> expected_top{"in", "out", "cwd", "tmp", "logs"};
  for (const std::string& name : entries_of(ctx.root)) {
    EXPECT_EQ(expected_top.count(name), 1u) << "created " << (ctx.root / name).string() << shown;
  }
  for (const char* empty : {"cwd", "tmp"}) {
    for (const std::string& name : entries_of(ctx.root / empty)) {
      ADD_FAILURE() << "left " << (ctx.root / empty / name).string() << " behind" << shown;
    }
  }

  // (e) nothing that looks finished, no temporaries left
  for (const std::string& pattern : c.absent) {
    const fs::path path = ctx.expand(pattern);
    std::error_code ec;
    EXPECT_FALSE(fs::exists(fs::symlink_status(path, ec))) << path.string() << " exists" << shown;
    // Remove what a broken stage planted outside ROOT.
    const std::string p = path.lexically_normal().string(), root = ctx.root.lexically_normal().string();
    if (p.compare(0, root.size(), root) != 0) fs::remove_all(path, ec);
  }
  std::error_code ec;
  for (fs::recursive_directory_iterator it(ctx.out, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    EXPECT_FALSE(looks_temporary(name)) << "left the temporary " << it->path().string() << " behind" << shown;
  }
}

class Hostile : public ::testing::TestWithParam<Case> {};

TEST_P(Hostile, FailsCleanly) {
  testutil::TempDir tmp;
  Ctx ctx(tmp.path());
  check_case(GetParam(), ctx);
}

INSTANTIATE_TEST_SUITE_P(Corpus, Hostile, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// The controls: each base command of the corpus on its valid inputs exits 0, so every
// case above fails only for what its setup broke (and the --resume cases really resume:
// their checkpoint is of the same settings, not one a stage would discard).
struct Control {
  std::string name;
  std::function<void(Ctx&)> setup;
  std::string command;
};
void PrintTo(const Control& c, std::ostream* out) { *out << c.name; }

class HostileControl : public ::testing::TestWithParam<Control> {};

TEST_P(HostileControl, ValidInputsSucceed) {
  const Control& c = GetParam();
  testutil::TempDir tmp;
  Ctx ctx(tmp.path());
  try {
    c.setup(ctx);
  } catch (const std::exception& e) {
    FAIL() << "setup of " << c.name << " failed: " << e.what();
  }
  if (HasFatalFailure()) return;
  const std::string command = ctx.expand(c.command);
  const Outcome r = run_command(ctx, command, 300, false);
  EXPECT_TRUE(r.how.empty() && r.code == 0) << command << "\nexit code " << r.code << " " << r.how << "\n--- stderr ---\n"
                                            << r.err;
}

INSTANTIATE_TEST_SUITE_P(Corpus, HostileControl,
                         ::testing::Values(Control{"fetch", kGoodArchive, kFetch},
                                           Control{"synth", nothing, kSynth},
                                           Control{"extract", with_data(), kExtract},
                                           Control{"head", with_cache(), kHead},
                                           Control{"finetune_resume", with_checkpoint([](const fs::path&, Ctx&) {}), kResume},
                                           Control{"finetune", with_data(), kFinetuneFlags},
                                           Control{"compare", with_runs(), kCompare}),
                         [](const ::testing::TestParamInfo<Control>& info) { return info.param.name; });

// "--out DIR/" for a DIR that does not exist yet: the one hostile-looking --out that may
// succeed. Either it writes DIR (the six batch files in it) or it refuses with exit 1;
// never does it touch DIR's parent or the sentinel beside DIR (the old code took the
// empty file name after the slash for a folder and replaced the parent).
TEST(HostileSynth, TrailingSlashOutWritesIntoTheNewFolderOnly) {
  testutil::TempDir tmp;
  Ctx ctx(tmp.path());
  const fs::path parent = ctx.in / "parent";
  write_file(parent / "sentinel.txt", "keep me\n");
  const std::string command = ctx.expand(kSynth.with("--out", "{in}/parent/fresh/").str());
  SCOPED_TRACE(command);
  const Outcome r = run_command(ctx, command, 120, false);
  const std::string shown = "\n--- stderr ---\n" + r.err + "--- stdout ---\n" + r.out;

  EXPECT_TRUE(r.how.empty() && (r.code == 0 || r.code == 1)) << "exit code " << r.code << " " << r.how << shown;
  ASSERT_TRUE(fs::is_regular_file(parent / "sentinel.txt")) << "the folder beside DIR was replaced" << shown;
  EXPECT_EQ(read_all(parent / "sentinel.txt"), "keep me\n");
  std::set<std::string> names;
  for (const std::string& name : entries_of(parent)) names.insert(name);
  if (r.code == 0) {
    EXPECT_EQ(names, (std::set<std::string>{"fresh", "sentinel.txt"})) << shown;
    for (const char* batch : kBatches) EXPECT_TRUE(fs::is_regular_file(parent / "fresh" / batch)) << batch << shown;
  } else {
    EXPECT_EQ(names, (std::set<std::string>{"sentinel.txt"})) << shown;
    EXPECT_NE(error_text(r.err).find("fresh"), std::string::npos) << shown;
  }
  for (const char* trace : {"Exception raised from", "frame #", "terminate called", "Aborted", "Segmentation", "what():"}) {
    EXPECT_EQ(r.err.find(trace), std::string::npos) << trace << shown;
  }
  for (const char* empty : {"cwd", "tmp", "out"}) EXPECT_TRUE(entries_of(ctx.root / empty).empty()) << empty << shown;
}

}  // namespace
