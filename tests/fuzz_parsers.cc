// fuzz-parsers: seeded-mutation fuzzing of every reader of untrusted files -- the
// CIFAR-10 batch decoder, the torch.save reader (zip and legacy formats), the feature-cache reader, the
// JPEG/PNG decoder, the archive unpacker and the run-file reader (metrics.json and its settings).
//
//   fuzz-parsers [--iterations N] [--seed S] [--only cifar|torch|cache|image|archive|run] [--keep DIR]
//                [--verbose 1]   (names each input before parsing it: finds a hang)
//
// Each parser starts from valid inputs (made here, or the committed fixtures) and is
// fed N mutants of them: random byte flips, interesting values (0, 0xff, INT_MAX, 2^40
// as 4 or 8 bytes), truncations, deleted and duplicated ranges. A mutant may be
// accepted or refused with pipeline::Error; anything else -- another exception type,
// a crash, a hang, or (in a -DTRANSFER_SANITIZE=ON build) a memory or UB finding --
// is a finding. Each input runs in a child process with a 10 s deadline and the
// readers' own isolation (isolate.h) off, so the sanitizers watch the readers
// themselves; HDF5's known loops on damaged metadata are counted separately for the
// cache reader (the stages contain them in a child). Findings are printed with the mutant saved under --keep (default: the
// temporary folder) and make the exit code 1. Deterministic for a seed.
#include <archive.h>
#include <archive_entry.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "archive_entries.h"
#include "pipeline/archive.h"
#include "pipeline/cifar10.h"
#include "pipeline/error.h"
#include "pipeline/features.h"
#include "pipeline/image_decode.h"
#include "pipeline/isolate.h"
#include "pipeline/metrics.h"
#include "pipeline/pickle.h"
#include "pipeline/synth.h"

namespace fs = std::filesystem;

namespace {

constexpr double kSecondsPerInput = 10;

std::string read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& file, const std::string& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// One to eight random edits of `seed`.
std::string mutate(const std::string& seed, std::mt19937_64& rng) {
  std::string s = seed;
  const auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  const int edits = 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits && !s.empty(); ++e) {
    switch (rng() % 7) {
      case 0:  // flip bits of one byte
      case 1:
        s[pick(s.size())] ^= static_cast<char>(1 + rng() % 255);
        break;
      case 2: {  // an interesting byte
        const char values[] = {'\0', '\xff', '\x7f', '\x80', '\x01'};
        s[pick(s.size())] = values[rng() % 5];
        break;
      }
      case 3: {  // an interesting 4- or 8-byte integer, little-endian
        const uint64_t values[] = {0, ~uint64_t{0}, 0x7fffffff, 0x80000000, uint64_t{1} << 40, 0x7fffffffffffffff};
        const uint64_t v = values[rng() % 6];
        const size_t width = rng() % 2 ? 4 : 8;
        if (s.size() >= width) std::memcpy(&s[pick(s.size() - width + 1)], &v, width);
        break;
      }
      case 4:  // truncate
        s.resize(pick(s.size()));
        break;
      case 5: {  // delete a range
        const size_t at = pick(s.size());
        s.erase(at, 1 + pick(std::min<size_t>(64, s.size() - at)));
        break;
      }
      default: {  // duplicate a range
        const size_t at = pick(s.size());
        s.insert(pick(s.size()), s.substr(at, 1 + pick(std::min<size_t>(64, s.size() - at))));
        break;
      }
    }
  }
  return s;
}

struct Target {
  std::string name;
  std::vector<std::string> seeds;
  std::string suffix;                              // file name ending of a mutant
  std::function<void(const fs::path&)> parse;      // reads the file as a user's file would be read
};

fs::path make_temp_dir() {
  std::string name = (fs::temp_directory_path() / "fuzz-parsers-XXXXXX").string();
  if (::mkdtemp(name.data()) == nullptr) {
    std::perror("mkdtemp");
    std::exit(2);
  }
  return fs::path(name.c_str());
}

// A small tar.gz holding a CIFAR-like folder.
std::string cifar_archive(const fs::path& dir) {
  const fs::path file = dir / "seed.tar.gz";
  struct archive* a = archive_write_new();
  archive_write_add_filter_gzip(a);
  archive_write_set_format_pax_restricted(a);
  archive_write_open_filename(a, file.c_str());
  const testutil::PlainEntries entries = {
      {"cifar-10-batches-bin/", ""},
      {"cifar-10-batches-bin/data_batch_1.bin", std::string(3073 * 2, '\3')},
      {"cifar-10-batches-bin/test_batch.bin", std::string(3073, '\5')},
      {"cifar-10-batches-bin/batches.meta.txt", "airplane\nautomobile\n"}};
  testutil::write_plain_entries(a, entries);
  archive_write_close(a);
  archive_write_free(a);
  return read_bytes(file);
}

// A small complete cache of each dtype, written by the real writer.
std::vector<std::string> cache_seeds(const fs::path& dir) {
  std::vector<std::string> seeds;
  for (pipeline::FeatureDtype dtype : {pipeline::FeatureDtype::Float32, pipeline::FeatureDtype::Float16}) {
    const fs::path file = dir / ("seed-" + pipeline::to_string(dtype) + ".h5");
    pipeline::CacheLayout layout;
    layout.train_rows = 12;
    layout.test_rows = 4;
    layout.taps = {{"fc7", 16}, {"pool5", 8}};
    layout.dtype = dtype;
    const nlohmann::json provenance = {{"settings", {{"seed", 1}}}};
    pipeline::FeatureWriter writer(file, provenance, layout);
    for (const char* split : {"train", "test"}) {
      const int64_t n = writer.rows(split);
      writer.write(split, 0, at::arange(n, at::kLong) % 10,
                   {{"fc7", at::randn({n, 16})}, {"pool5", at::rand({n, 8})}});
    }
    writer.finish();
    seeds.push_back(read_bytes(file));
  }
  return seeds;
}

// A finished probe run's metrics.json, settings and confusion matrix included.
std::string run_seed(const fs::path& dir) {
  pipeline::RunMetrics m;
  m.approach = "linear-probe";
  m.settings.backbone = "alexnet";
  m.settings.dataset = {{"name", "cifar10"}, {"title", "CIFAR-10"}, {"classes", 2}, {"class_names", {"a", "b"}}};
  m.settings.image_size = 64;
  m.settings.epochs = 2;
  m.settings.batch_size = 8;
  m.settings.lr = 1e-3;
  m.settings.sweep_lr = {1e-3, 1e-4};
  m.settings.tap = "fc7";
  for (int64_t e = 1; e <= 2; ++e) {
    pipeline::EpochRecord r;
    r.epoch = e;
    r.val_acc = 0.5;
    m.epochs.push_back(r);
  }
  m.best_epoch = 2;
  m.test_acc = 0.75;
  m.confusion = {{3, 1}, {1, 3}};
  pipeline::write_metrics(dir, m);
  return read_bytes(dir / "metrics.json");
}

}  // namespace

int main(int argc, char** argv) {
  int64_t iterations = 300;
  uint64_t seed = 1;
  std::string only;
  fs::path keep;
  bool verbose = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--iterations") iterations = std::stoll(value);
    else if (flag == "--seed") seed = std::stoull(value);
    else if (flag == "--only") only = value;
    else if (flag == "--keep") keep = value;
    else if (flag == "--verbose") verbose = value == "1";
    else {
      std::fprintf(stderr, "fuzz-parsers: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  const fs::path work = make_temp_dir();
  if (keep.empty()) keep = work;
  spdlog::set_level(spdlog::level::off);  // the parsers' warnings are not findings
  pipeline::SynthOptions synth;
  synth.out = work / "synth";
  synth.train = 10;
  synth.test = 2;
  pipeline::write_synthetic_cifar(synth);
  const fs::path unpack = work / "unpack";
  const fs::path run = work / "run";
  fs::create_directories(run);
  write_bytes(run / "config.json", "{}");

  std::vector<Target> targets = {
      {"cifar", {read_bytes(synth.out / "data_batch_1.bin"), read_bytes(synth.out / "test_batch.bin")}, ".bin",
       [](const fs::path& file) {
         pipeline::decode_cifar_files({file});
       }},
      {"torch",
       {read_bytes(fs::path(TRANSFER_FIXTURES) / "tiny_state_dict.pth"),
        read_bytes(fs::path(TRANSFER_FIXTURES) / "torch2_state_dict.pth"),
        read_bytes(fs::path(TRANSFER_FIXTURES) / "legacy_pair_legacy.pth"),
        read_bytes(fs::path(TRANSFER_FIXTURES) / "legacy_state_dict.pth")},
       ".pth",
       [](const fs::path& file) {
         for (const auto& [key, tensor] : pipeline::read_torch_save_dict(file)) (void)tensor.sum().item<double>();
       }},
      {"cache", cache_seeds(work), ".h5",
       [](const fs::path& file) {
         const pipeline::FeatureReader reader(file);
         for (const char* split : {"train", "test"}) {
           (void)reader.labels(split).sum().item<int64_t>();
           for (const std::string& tap : reader.taps()) (void)reader.read(split, tap).sum().item<double>();
         }
       }},
      {"image",
       {read_bytes(fs::path(TRANSFER_FIXTURES) / "images/tree/train/cat/b_gray.jpeg"),
        read_bytes(fs::path(TRANSFER_FIXTURES) / "images/tree/train/cat/a_rgb.jpg"),
        read_bytes(fs::path(TRANSFER_FIXTURES) / "images/tree/train/dog/f_small.PNG"),
        read_bytes(fs::path(TRANSFER_FIXTURES) / "images/tree/test/dog/h_gray16.png")},
       ".img",
       [](const fs::path& file) {
         const pipeline::RgbImage image = pipeline::decode_image(file);
         if (image.pixels.size() != static_cast<size_t>(image.width * image.height * 3)) std::abort();
       }},
      {"archive", {cifar_archive(work)}, ".tar.gz",
       [&](const fs::path& file) {
         fs::remove_all(unpack);
         fs::create_directories(unpack);
         pipeline::UnpackLimits limits;
         limits.links = false;
         limits.entries = {{"cifar-10-batches-bin", 0},
                           {"cifar-10-batches-bin/data_batch_1.bin", 30730000},
                           {"cifar-10-batches-bin/test_batch.bin", 30730000},
                           {"cifar-10-batches-bin/batches.meta.txt", 1 << 20}};
         pipeline::extract_archive(file, unpack, limits);
       }},
      {"run", {run_seed(run)}, ".json",
       [&](const fs::path& file) {
         fs::copy_file(file, run / "metrics.json", fs::copy_options::overwrite_existing);
         const pipeline::RunMetrics m = pipeline::read_metrics(run);
         (void)pipeline::to_json(m);
       }},
  };

  int findings = 0;
  std::mt19937_64 rng(seed);
  for (const Target& target : targets) {
    if (!only.empty() && only != target.name) continue;
    int64_t accepted = 0, refused = 0, hung = 0;
    const fs::path file = work / ("mutant" + target.suffix);
    for (int64_t i = 0; i < iterations; ++i) {
      const std::string mutant = mutate(target.seeds[static_cast<size_t>(i) % target.seeds.size()], rng);
      write_bytes(file, mutant);
      if (verbose) std::fprintf(stderr, "fuzz-parsers: %s input %lld\n", target.name.c_str(), static_cast<long long>(i));
      // Each input in a child with a deadline, the reader's own isolation off there, so
      // that a crash, sanitizer report or hang in the reader itself is seen here.
      const pipeline::Isolated run = pipeline::run_isolated(
          [&] {
            ::setenv("TRANSFER_NO_ISOLATE", "1", 1);
            target.parse(file);
          },
          kSecondsPerInput);
      std::string finding;
      switch (run.outcome) {
        case pipeline::Isolated::Finished: ++accepted; break;
        case pipeline::Isolated::Threw: ++refused; break;
        case pipeline::Isolated::ThrewOther: finding = "a non-pipeline exception: " + run.message; break;
        case pipeline::Isolated::Crashed: finding = "a crash: " + run.message; break;
        case pipeline::Isolated::Hung:
          // HDF5 loops on some damaged metadata; the stages contain that by reading a
          // cache's metadata in a child first (isolate.h). Counted, not a finding.
          if (target.name == "cache") {
            ++hung;
          } else {
            finding = "a hang: " + run.message;
          }
          break;
      }
      if (!finding.empty()) {
        ++findings;
        const fs::path kept = keep / ("finding-" + target.name + "-" + std::to_string(i) + target.suffix);
        write_bytes(kept, mutant);
        std::fprintf(stderr, "fuzz-parsers: %s input %lld gave %s (kept as %s)\n", target.name.c_str(),
                     static_cast<long long>(i), finding.c_str(), kept.c_str());
      }
    }
    const std::string hangs = hung > 0 ? fmt::format(", {} hung in HDF5 (contained by isolate.h)", hung) : "";
    std::printf("fuzz-parsers: %-7s %lld mutants, %lld refused with a clear error, %lld accepted%s\n",
                target.name.c_str(), static_cast<long long>(iterations), static_cast<long long>(refused),
                static_cast<long long>(accepted), hangs.c_str());
  }
  if (keep != work || findings == 0) fs::remove_all(work);
  std::printf("fuzz-parsers: %d findings\n", findings);
  return findings == 0 ? 0 : 1;
}
