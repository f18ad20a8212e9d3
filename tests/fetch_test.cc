// Tests for pipeline/fetch and the transfer-fetch stage, on tiny CIFAR-format
// archives built here with libarchive (a few 3073-byte records per batch file).
// Downloads use file:// URLs; HTTP itself is covered by download_test.cc.
#include "pipeline/fetch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "pipeline/digest.h"
#include "pipeline/error.h"
#include "archive_util.h"
#include "test_util.h"

namespace fs = std::filesystem;
using pipeline::DigestAlgorithm;

namespace {
using testutil::random_bytes;
using testutil::read_text;
using testutil::write_bytes;

const char* const kBatches[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};

using testutil::Entry;

// A tar.gz of the folder cifar-10-batches-bin/ and `entries`.
void write_cifar_tar_gz(const fs::path& file, std::vector<Entry> entries) {
  entries.insert(entries.begin(), Entry{"cifar-10-batches-bin/", "", Entry::Dir});
  testutil::write_tar_gz(file, entries);
}

// The six batch files with `records` records each (random bytes), plus batches.meta.txt.
std::vector<Entry> cifar_entries(int records = 3) {
  std::vector<Entry> entries;
  unsigned seed = 10;
  for (const char* name : kBatches) {
    entries.push_back({std::string("cifar-10-batches-bin/") + name,
                       random_bytes(static_cast<size_t>(records) * 3073, seed++)});
  }
  entries.push_back({"cifar-10-batches-bin/batches.meta.txt", "airplane\nautomobile\n"});
  return entries;
}

std::vector<Entry> without(std::vector<Entry> entries, const std::string& name) {
  entries.erase(std::remove_if(entries.begin(), entries.end(), [&](const Entry& e) { return e.name == name; }),
                entries.end());
  return entries;
}

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> names;
  if (!fs::exists(dir)) return names;
  for (const auto& item : fs::directory_iterator(dir)) names.insert(item.path().filename().string());
  return names;
}

class FetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    archive_ = dir_ / "cifar-10-binary.tar.gz";
    options_.out_dir = dir_ / "data";
    options_.skip_weights = true;
    options_.show_progress = false;
    options_.retries = 0;
  }
  // Writes the archive and points options_ at it with its MD5.
  void use_archive(const std::vector<Entry>& entries) {
    write_cifar_tar_gz(archive_, entries);
    options_.archive = archive_;
    options_.md5 = pipeline::file_digest(archive_, DigestAlgorithm::Md5);
  }

  // fetch() must throw pipeline::Error whose message holds `needle`, leaving no CIFAR folder.
  void expect_failure(const std::string& needle) {
    const std::string message = testutil::error_of([&] { pipeline::fetch(options_); });
    EXPECT_NE(message.find(needle), std::string::npos) << message;
    EXPECT_FALSE(fs::exists(cifar_dir()));
    EXPECT_EQ(names_in(options_.out_dir), std::set<std::string>{}) << "temporary files left behind";
  }

  fs::path cifar_dir() const { return options_.out_dir / pipeline::kCifar10DirName; }

  testutil::TempDir tmp_;
  fs::path dir_;
  fs::path archive_;
  pipeline::FetchOptions options_;
};

TEST_F(FetchTest, LocalArchiveBecomesAVerifiedFolder) {
  const auto entries = cifar_entries();
  use_archive(entries);

  const auto result = pipeline::fetch(options_);

  EXPECT_EQ(result.cifar_dir, cifar_dir());
  EXPECT_FALSE(result.cifar_already_present);
  EXPECT_EQ(result.archive_md5, options_.md5);
  for (const auto& e : entries) EXPECT_EQ(read_text(options_.out_dir / e.name), e.data) << e.name;
  EXPECT_EQ(read_text(cifar_dir() / ".verified"), options_.md5 + "\n");
  EXPECT_EQ(names_in(options_.out_dir), std::set<std::string>{"cifar-10-batches-bin"});
  EXPECT_NO_THROW(pipeline::check_cifar10_files(cifar_dir()));
  EXPECT_TRUE(result.weights_path.empty());
}

TEST_F(FetchTest, SecondRunDoesNothing) {
  use_archive(cifar_entries());
  pipeline::fetch(options_);
  const auto marker_time = fs::last_write_time(cifar_dir() / ".verified");
  fs::remove(archive_);  // not needed any more: a second run must not touch it

  const auto result = pipeline::fetch(options_);

  EXPECT_TRUE(result.cifar_already_present);
  EXPECT_EQ(fs::last_write_time(cifar_dir() / ".verified"), marker_time);
}

TEST_F(FetchTest, UpperCaseMd5IsAccepted) {
  use_archive(cifar_entries());
  for (auto& c : options_.md5) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_NO_THROW(pipeline::fetch(options_));
}

TEST_F(FetchTest, WrongMd5LeavesNothing) {
  use_archive(cifar_entries());
  const std::string actual = options_.md5;
  options_.md5 = "0123456789abcdef0123456789abcdef";
  expect_failure(archive_.string());
  expect_failure(actual);  // the message offers the actual digest for --md5
  EXPECT_TRUE(fs::exists(archive_)) << "a local archive is the user's: never deleted";
}

TEST_F(FetchTest, MalformedMd5IsAUsageError) {
  use_archive(cifar_entries());
  options_.md5 = "abc";
  EXPECT_THROW(pipeline::fetch(options_), pipeline::UsageError);
}

TEST_F(FetchTest, TruncatedArchiveLeavesNothing) {
  auto entries = cifar_entries(20);
  use_archive(entries);
  fs::resize_file(archive_, fs::file_size(archive_) / 2);
  options_.md5 = pipeline::file_digest(archive_, DigestAlgorithm::Md5);  // so that unpacking is reached
  expect_failure("truncated");
}

TEST_F(FetchTest, ArchiveWithoutTestBatchIsRefused) {
  use_archive(without(cifar_entries(), "cifar-10-batches-bin/test_batch.bin"));
  expect_failure("test_batch.bin is missing");
}

TEST_F(FetchTest, BatchOfWrongSizeIsRefused) {
  auto entries = cifar_entries();
  entries[2].data += "extra";
  use_archive(entries);
  expect_failure("data_batch_3.bin has 9224 bytes");
}

TEST_F(FetchTest, ArchiveWithoutTopFolderIsRefused) {
  std::vector<Entry> entries;
  for (const char* name : kBatches) entries.push_back({name, random_bytes(3073, 1)});
  write_cifar_tar_gz(archive_, entries);  // still holds the (empty) top folder entry
  options_.archive = archive_;
  options_.md5 = pipeline::file_digest(archive_, DigestAlgorithm::Md5);
  expect_failure("holds 'data_batch_1.bin', which the expected archive does not");
}

TEST_F(FetchTest, DotDotEntryIsRefused) {
  auto entries = cifar_entries();
  entries.push_back({"../evil", "evil"});
  use_archive(entries);
  expect_failure("refusing");
  EXPECT_FALSE(fs::exists(dir_ / "evil"));
  EXPECT_FALSE(fs::exists(options_.out_dir.parent_path() / "evil"));
}

TEST_F(FetchTest, AbsoluteEntryIsRefused) {
  auto entries = cifar_entries();
  const fs::path evil = dir_ / "absolute-evil";
  entries.push_back({evil.string(), "evil"});
  use_archive(entries);
  expect_failure("refusing");
  EXPECT_FALSE(fs::exists(evil));
}

TEST_F(FetchTest, UnverifiedFolderIsReplaced) {
  use_archive(cifar_entries());
  fs::create_directories(cifar_dir());
  write_bytes(cifar_dir() / "data_batch_1.bin", "left from an interrupted manual unpack");

  const auto result = pipeline::fetch(options_);

  EXPECT_FALSE(result.cifar_already_present);
  EXPECT_NO_THROW(pipeline::check_cifar10_files(cifar_dir()));
}

// A folder holding anything the archive does not (the user's own files) is never
// deleted to make room: the fetch stops before any work, and the folder is untouched.
TEST_F(FetchTest, FolderWithForeignFilesIsNotReplaced) {
  use_archive(cifar_entries());
  fs::create_directories(cifar_dir());
  write_bytes(cifar_dir() / "notes.txt", "the user's own notes");
  const std::string message = testutil::error_of([&] { pipeline::fetch(options_); });
  EXPECT_NE(message.find("notes.txt"), std::string::npos) << message;
  EXPECT_EQ(testutil::read_text(cifar_dir() / "notes.txt"), "the user's own notes");
  EXPECT_EQ(names_in(options_.out_dir), std::set<std::string>{pipeline::kCifar10DirName});
}

TEST_F(FetchTest, LinksInTheArchiveAreRefused) {
  for (const Entry& link : {Entry{"cifar-10-batches-bin/readme.html", "data_batch_1.bin", Entry::Symlink},
                            Entry{"cifar-10-batches-bin/readme.html", "cifar-10-batches-bin/data_batch_1.bin",
                                  Entry::Hardlink}}) {
    auto entries = cifar_entries();
    entries.push_back(link);
    use_archive(entries);
    expect_failure("is a link");
  }
}

// The lexically-inside, physically-outside chain: up -> "." then x -> "up/../..".
TEST_F(FetchTest, SymlinkChainOutOfTheFolderIsRefused) {
  auto entries = cifar_entries();
  entries.push_back({"cifar-10-batches-bin/up", ".", Entry::Symlink});
  entries.push_back({"cifar-10-batches-bin/data_batch_9.bin", "up/../..", Entry::Symlink});
  use_archive(entries);
  expect_failure("refusing");
}

TEST_F(FetchTest, UnexpectedEntryIsRefused) {
  auto entries = cifar_entries();
  entries.push_back({"cifar-10-batches-bin/extra.bin", "200 MB of anything"});
  use_archive(entries);
  expect_failure("extra.bin");
}

// A batch file declared larger than 10,000 records is refused before a byte of it is
// written (a 56 KB archive could otherwise unpack a 10 GB file).
TEST_F(FetchTest, OversizedEntryIsRefusedBeforeItIsWritten) {
  auto entries = cifar_entries();
  entries[0].data = std::string(3073 * 10001, '\0');
  use_archive(entries);
  expect_failure("more than the 30730000 such a file can hold");
}

// On a full disk (here: a file-size limit) libarchive only warns; the unpack must fail
// and leave nothing that looks verified.
TEST_F(FetchTest, WriteFailureWhileUnpackingIsAnError) {
  auto entries = cifar_entries(400);  // 1.2 MB per batch file, over the 512 KiB limit
  use_archive(entries);
  const fs::path log = dir_ / "fetch.log";
  const std::string command = fmt::format(
      "bash -c 'trap \"\" XFSZ; ulimit -f 512; exec {}/transfer-fetch --archive {} --md5 {} --out {} --skip-weights' "
      ">{} 2>&1",
      TRANSFER_BIN, archive_.string(), options_.md5, options_.out_dir.string(), log.string());
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1) << testutil::read_text(log);
  EXPECT_NE(testutil::read_text(log).find("data_batch_1.bin"), std::string::npos) << testutil::read_text(log);
  EXPECT_FALSE(fs::exists(cifar_dir()));
  EXPECT_EQ(names_in(options_.out_dir), std::set<std::string>{}) << "temporary files left behind";
}

TEST_F(FetchTest, ArchiveThatIsNotARegularFileIsRefused) {
  options_.archive = dir_ / "zero.tar.gz";
  fs::create_symlink("/dev/zero", options_.archive);
  options_.md5 = std::string(32, '0');
  expect_failure("not a regular file");
}

TEST_F(FetchTest, FolderFromAnotherArchiveIsReplaced) {
  use_archive(cifar_entries());
  pipeline::fetch(options_);
  use_archive(cifar_entries(4));  // a different archive, a different MD5
  const auto result = pipeline::fetch(options_);
  EXPECT_FALSE(result.cifar_already_present);
  EXPECT_EQ(fs::file_size(cifar_dir() / "test_batch.bin"), 4u * 3073u);
}

TEST_F(FetchTest, UnwritableOutDirIsAnError) {
  use_archive(cifar_entries());
  write_bytes(dir_ / "data", "a file where the output folder should be");
  EXPECT_THROW(pipeline::fetch(options_), pipeline::Error);
}

TEST_F(FetchTest, DownloadsArchiveFromUrlAndKeepsIt) {
  write_cifar_tar_gz(archive_, cifar_entries());
  options_.url = "file://" + archive_.string();
  options_.md5 = pipeline::file_digest(archive_, DigestAlgorithm::Md5);

  const auto result = pipeline::fetch(options_);

  EXPECT_FALSE(result.cifar_already_present);
  EXPECT_EQ(read_text(options_.out_dir / "cifar-10-binary.tar.gz"), read_text(archive_));
  EXPECT_EQ(names_in(options_.out_dir), (std::set<std::string>{"cifar-10-batches-bin", "cifar-10-binary.tar.gz"}));
}

TEST_F(FetchTest, DownloadWithWrongMd5IsDeleted) {
  write_cifar_tar_gz(archive_, cifar_entries());
  options_.url = "file://" + archive_.string();
  options_.md5 = "0123456789abcdef0123456789abcdef";
  expect_failure("MD5");
}

// A file of the archive's name that is not the archive was never downloaded here (a
// download gets its name only once verified): it is the user's, never deleted.
TEST_F(FetchTest, AnArchiveNamedFileOfTheUsersIsNotReplaced) {
  write_cifar_tar_gz(archive_, cifar_entries());
  options_.url = "file://" + archive_.string();
  options_.md5 = pipeline::file_digest(archive_, DigestAlgorithm::Md5);
  fs::create_directories(options_.out_dir);
  write_bytes(options_.out_dir / "cifar-10-binary.tar.gz", "my own file");
  const std::string message = testutil::error_of([&] { pipeline::fetch(options_); });
  EXPECT_NE(message.find("in the way"), std::string::npos) << message;
  EXPECT_EQ(read_text(options_.out_dir / "cifar-10-binary.tar.gz"), "my own file");
  EXPECT_FALSE(fs::exists(cifar_dir()));
}

TEST_F(FetchTest, MissingUrlIsAnError) {
  options_.url = "file://" + (dir_ / "absent.tar.gz").string();
  expect_failure("absent.tar.gz");
}

class FetchWeightsTest : public FetchTest {
 protected:
  // A weights-like file named "<stem>-<first 8 hex of its sha256>.pth" (or the given name).
  fs::path make_weights(const std::string& stem, const std::string& forced_name = "") {
    const std::string data = random_bytes(5000, 42);
    const std::string sha = pipeline::bytes_digest(data, DigestAlgorithm::Sha256);
    const fs::path file = dir_ / (forced_name.empty() ? stem + "-" + sha.substr(0, 8) + ".pth" : forced_name);
    write_bytes(file, data);
    return file;
  }
};

TEST_F(FetchWeightsTest, VerifyAcceptsMatchingName) {
  const fs::path file = make_weights("alexnet-owt");
  const std::string sha = pipeline::verify_weights_file(file);
  EXPECT_EQ(sha, pipeline::file_digest(file, DigestAlgorithm::Sha256));
  EXPECT_EQ(sha.size(), 64u);
}

TEST_F(FetchWeightsTest, VerifyRejectsMismatchedName) {
  const fs::path file = make_weights("", "alexnet-owt-7be5be79.pth");
  const std::string message = testutil::error_of([&] { pipeline::verify_weights_file(file); });
  EXPECT_NE(message.find(file.string()), std::string::npos) << message;
  EXPECT_NE(message.find("7be5be79"), std::string::npos) << message;
}

TEST_F(FetchWeightsTest, VerifyWithoutHexInNameReturnsDigest) {
  const fs::path file = make_weights("", "alexnet-owt.pth");
  EXPECT_EQ(pipeline::verify_weights_file(file), pipeline::file_digest(file, DigestAlgorithm::Sha256));
}

TEST_F(FetchWeightsTest, LocalWeightsFileIsCopiedThenFoundPresent) {
  use_archive(cifar_entries());
  options_.skip_weights = false;
  options_.weights_file = make_weights("alexnet-owt");

  const auto first = pipeline::fetch(options_);
  EXPECT_EQ(first.weights_path, options_.out_dir / options_.weights_file.filename());
  EXPECT_EQ(read_text(first.weights_path), read_text(options_.weights_file));
  EXPECT_EQ(first.weights_sha256, pipeline::file_digest(options_.weights_file, DigestAlgorithm::Sha256));
  EXPECT_FALSE(first.weights_already_present);

  const auto second = pipeline::fetch(options_);
  EXPECT_TRUE(second.weights_already_present);
  EXPECT_TRUE(second.cifar_already_present);
  EXPECT_EQ(second.weights_sha256, first.weights_sha256);
}

TEST_F(FetchWeightsTest, MismatchedLocalWeightsLeaveNothing) {
  use_archive(cifar_entries());
  options_.skip_weights = false;
  options_.weights_file = make_weights("", "alexnet-owt-7be5be79.pth");
  EXPECT_THROW(pipeline::fetch(options_), pipeline::Error);
  EXPECT_EQ(names_in(options_.out_dir), std::set<std::string>{"cifar-10-batches-bin"});
}

TEST_F(FetchWeightsTest, WeightsAreDownloadedFromUrl) {
  use_archive(cifar_entries());
  options_.skip_weights = false;
  const fs::path source = make_weights("alexnet-owt");
  options_.weights_url = "file://" + source.string();
  const auto result = pipeline::fetch(options_);
  EXPECT_EQ(read_text(result.weights_path), read_text(source));
  EXPECT_EQ(result.weights_sha256, pipeline::file_digest(source, DigestAlgorithm::Sha256));
}

TEST_F(FetchWeightsTest, MismatchedDownloadIsDeleted) {
  use_archive(cifar_entries());
  options_.skip_weights = false;
  options_.weights_url = "file://" + make_weights("", "alexnet-owt-7be5be79.pth").string();
  EXPECT_THROW(pipeline::fetch(options_), pipeline::Error);
  EXPECT_EQ(names_in(options_.out_dir), std::set<std::string>{"cifar-10-batches-bin"});
}

TEST_F(FetchWeightsTest, AWeightsNamedFileOfTheUsersIsNotReplaced) {
  use_archive(cifar_entries());
  options_.skip_weights = false;
  options_.weights_url = "file://" + make_weights("alexnet-owt").string();
  fs::create_directories(options_.out_dir);
  const fs::path mine = options_.out_dir / fs::path(options_.weights_url).filename();
  write_bytes(mine, "my own weights");
  const std::string message = testutil::error_of([&] { pipeline::fetch(options_); });
  EXPECT_NE(message.find("in the way"), std::string::npos) << message;
  EXPECT_EQ(read_text(mine), "my own weights");
}

// A link planted under the copy's temporary name is replaced, never written through.
TEST_F(FetchWeightsTest, APlantedTemporaryLinkIsNotWrittenThrough) {
  use_archive(cifar_entries());
  options_.skip_weights = false;
  const fs::path source = make_weights("alexnet-owt");
  options_.weights_file = source;
  fs::create_directories(options_.out_dir);
  write_bytes(dir_ / "victim.txt", "elsewhere");
  fs::create_symlink(dir_ / "victim.txt", options_.out_dir / (source.filename().string() + ".tmp"));
  const auto result = pipeline::fetch(options_);
  EXPECT_EQ(read_text(dir_ / "victim.txt"), "elsewhere");
  EXPECT_FALSE(fs::is_symlink(result.weights_path));
  EXPECT_EQ(read_text(result.weights_path), read_text(source));
}

// The user's own image folder is an input: weights never land among the images.
TEST_F(FetchWeightsTest, WeightsNeverGoIntoTheImageFolder) {
  options_.skip_weights = false;
  options_.weights_file = make_weights("alexnet-owt");
  fs::create_directories(dir_ / "images" / "train" / "cat");
  options_.dataset = "folder:" + (dir_ / "images").string();
  options_.out_dir = dir_ / "images" / "train" / "cat";
  EXPECT_THROW(pipeline::fetch(options_), pipeline::UsageError);
  EXPECT_EQ(names_in(dir_ / "images" / "train" / "cat"), std::set<std::string>{});
}

class FetchStageTest : public FetchTest {
 protected:
  // transfer-fetch's exit code with `flags`, writing into options_.out_dir.
  int fetch_stage(const std::string& flags) const {
    return testutil::run_stage("transfer-fetch --out '" + options_.out_dir.string() + "' " + flags);
  }
};

TEST_F(FetchStageTest, BadMd5ExitsOneAndLeavesNoFolder) {
  write_cifar_tar_gz(archive_, cifar_entries());
  EXPECT_EQ(fetch_stage("--skip-weights --archive '" + archive_.string() + "' --md5 0123456789abcdef0123456789abcdef"),
            1);
  EXPECT_FALSE(fs::exists(cifar_dir()));
}

TEST_F(FetchStageTest, GoodArchiveExitsZeroTwice) {
  write_cifar_tar_gz(archive_, cifar_entries());
  const std::string flags = "--skip-weights --no-progress --archive '" + archive_.string() + "' --md5 " +
                            pipeline::file_digest(archive_, DigestAlgorithm::Md5);
  EXPECT_EQ(fetch_stage(flags), 0);
  EXPECT_NO_THROW(pipeline::check_cifar10_files(cifar_dir()));
  EXPECT_EQ(fetch_stage(flags), 0);
}

TEST_F(FetchStageTest, BadUsageExitsTwo) {
  EXPECT_EQ(fetch_stage("--no-such-flag"), 2);
  EXPECT_EQ(fetch_stage("--skip-weights --archive /nonexistent/archive.tar.gz"), 2);
  write_cifar_tar_gz(archive_, cifar_entries());
  EXPECT_EQ(fetch_stage("--skip-weights --archive '" + archive_.string() + "' --md5 xyz"), 2);
  EXPECT_EQ(fetch_stage("--help"), 0);
  EXPECT_FALSE(fs::exists(cifar_dir()));
}

}  // namespace
