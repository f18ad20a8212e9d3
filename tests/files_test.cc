// Tests of pipeline/files: output paths, folder replacement, input/output overlap,
// regular-file checks, run-folder locks and bounded reads.

#include "pipeline/files.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "pipeline/error.h"
#include "test_util.h"

namespace fs = std::filesystem;
using testutil::error_of;
using testutil::read_text;
using testutil::write_bytes;

namespace {

class FilesTest : public ::testing::Test {
 protected:
  testutil::TempDir tmp_;
};

// The bug that deleted a user's folder: "DIR/" has an empty file name, and the
// parent of "DIR/" is DIR itself, so taking parent_path() twice named DIR's parent.
TEST_F(FilesTest, OutputPathOfATrailingSlashIsTheFolderItself) {
  const fs::path dir = tmp_ / "out";
  EXPECT_EQ(pipeline::output_path(dir.string() + "/", "--out"), dir);
  EXPECT_EQ(pipeline::output_path(dir.string() + "/.", "--out"), dir);
  EXPECT_EQ(pipeline::output_path(dir.string() + "//", "--out"), dir);
  EXPECT_EQ(pipeline::output_path(dir / "sub" / "..", "--out"), dir);
  EXPECT_THROW(pipeline::output_path("/", "--out"), pipeline::UsageError);
  EXPECT_THROW(pipeline::output_path("", "--out"), pipeline::UsageError);
}

TEST_F(FilesTest, ReplaceFolderSwapsInTheNewContents) {
  const fs::path target = tmp_ / "folder";
  fs::create_directories(target);
  write_bytes(target / "a", "old");
  write_bytes(tmp_ / "sibling", "stays");
  pipeline::replace_folder_atomically(
      target, [](const fs::path& t) { write_bytes(t / "a", "new"); }, [](const fs::path&) { return std::string(); });
  EXPECT_EQ(read_text(target / "a"), "new");
  EXPECT_EQ(read_text(tmp_ / "sibling"), "stays");
  EXPECT_FALSE(fs::exists(pipeline::old_folder_of(target)));
  // Nothing but the target and the sibling: no temporary left.
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp_.path()), fs::directory_iterator()), 2);
}

TEST_F(FilesTest, ReplaceFolderRefusesForeignFoldersFilesAndLinks) {
  const fs::path target = tmp_ / "home";
  fs::create_directories(target);
  write_bytes(target / "thesis.tex", "years of work");
  bool filled = false;
  const auto fill = [&](const fs::path&) { filled = true; };
  const auto ours = [](const fs::path& dir) { return pipeline::only_entries(dir, {"data_batch_1.bin"}); };
  const std::string message = error_of([&] { pipeline::replace_folder_atomically(target, fill, ours); });
  EXPECT_NE(message.find("thesis.tex"), std::string::npos) << message;
  EXPECT_FALSE(filled) << "the check must come before any work";
  EXPECT_EQ(read_text(target / "thesis.tex"), "years of work");

  write_bytes(tmp_ / "file", "x");
  EXPECT_THROW(pipeline::replace_folder_atomically(tmp_ / "file", fill, ours), pipeline::Error);
  fs::create_directory_symlink(target, tmp_ / "link");
  EXPECT_THROW(pipeline::replace_folder_atomically(tmp_ / "link", fill, ours), pipeline::Error);
  EXPECT_TRUE(fs::exists(target / "thesis.tex"));
}

// A folder of the user's under the name a crash would leave the previous folder at is
// theirs; the current folder is never replaced (it would vanish under the shell); the
// new folder gets a new folder's mode, not mkdtemp's 0700.
TEST_F(FilesTest, ReplaceFolderKeepsTheUsersOldFolderAndTheCurrentFolder) {
  const fs::path target = tmp_ / "data";
  const auto fill = [](const fs::path& dir) { write_bytes(dir / "data_batch_1.bin", "new"); };
  const auto ours = [](const fs::path& dir) { return pipeline::only_entries(dir, {"data_batch_1.bin"}); };
  fs::create_directories(tmp_ / ".data.old");
  write_bytes(tmp_ / ".data.old" / "mine.txt", "mine");
  const std::string message = error_of([&] { pipeline::replace_folder_atomically(target, fill, ours); });
  EXPECT_NE(message.find("mine.txt"), std::string::npos) << message;
  EXPECT_EQ(read_text(tmp_ / ".data.old" / "mine.txt"), "mine");
  fs::remove_all(tmp_ / ".data.old");

  const mode_t mask = ::umask(022);
  pipeline::replace_folder_atomically(target, fill, ours);
  ::umask(mask);
  EXPECT_EQ(fs::status(target).permissions(), static_cast<fs::perms>(0755));

  const fs::path cwd = fs::current_path();
  fs::current_path(target);
  const std::string here = error_of([&] { pipeline::replace_folder_atomically(target, fill, ours); });
  fs::current_path(cwd);
  EXPECT_NE(here.find("current folder"), std::string::npos) << here;
}

TEST_F(FilesTest, ReplaceFolderFailureLeavesTheOldFolder) {
  const fs::path target = tmp_ / "folder";
  fs::create_directories(target);
  write_bytes(target / "a", "old");
  EXPECT_THROW(pipeline::replace_folder_atomically(
                   target, [](const fs::path&) { pipeline::fail("disk full"); },
                   [](const fs::path&) { return std::string(); }),
               pipeline::Error);
  EXPECT_EQ(read_text(target / "a"), "old");
  for (const auto& e : fs::directory_iterator(tmp_.path())) EXPECT_EQ(e.path(), target) << "left behind";
}

TEST_F(FilesTest, OutputOverAnInputIsAUsageError) {
  const fs::path input = tmp_ / "data" / "data_batch_1.bin";
  fs::create_directories(input.parent_path());
  write_bytes(input, "records");
  EXPECT_THROW(pipeline::refuse_output_over_inputs(input, {input}, "--out"), pipeline::UsageError);
  // Another spelling of the same file, through a link to its folder.
  fs::create_directory_symlink(input.parent_path(), tmp_ / "alias");
  EXPECT_THROW(pipeline::refuse_output_over_inputs(tmp_ / "alias" / "data_batch_1.bin", {input}, "--out"),
               pipeline::UsageError);
  // Inside an input folder (a run folder the report reads).
  EXPECT_THROW(pipeline::refuse_output_over_inputs(tmp_ / "data" / "report", {tmp_ / "data"}, "--out"),
               pipeline::UsageError);
  EXPECT_NO_THROW(pipeline::refuse_output_over_inputs(tmp_ / "cache.h5", {input, tmp_ / "missing"}, "--out"));
  EXPECT_EQ(read_text(input), "records");
}

TEST_F(FilesTest, OnlyRegularFilesAreRead) {
  EXPECT_NE(error_of([] { pipeline::require_regular_file("/dev/zero", "weights file"); }).find("not a regular file"),
            std::string::npos);
  fs::create_symlink("/dev/zero", tmp_ / "zero.bin");
  EXPECT_NE(error_of([&] { pipeline::read_file(tmp_ / "zero.bin"); }).find("zero.bin"), std::string::npos);
  ASSERT_EQ(::mkfifo((tmp_ / "fifo").c_str(), 0600), 0);
  EXPECT_NE(error_of([&] { pipeline::read_file(tmp_ / "fifo"); }).find("not a regular file"), std::string::npos);
  EXPECT_NE(error_of([&] { pipeline::read_file(tmp_.path()); }).find("is a folder"), std::string::npos);
  EXPECT_NE(error_of([&] { pipeline::read_file(tmp_ / "none"); }).find("no such file"), std::string::npos);
  write_bytes(tmp_ / "big", std::string(2000, 'x'));
  EXPECT_NE(error_of([&] { pipeline::read_file(tmp_ / "big", 1000); }).find("2000 bytes"), std::string::npos);
  EXPECT_EQ(pipeline::read_file(tmp_ / "big").size(), 2000u);
}

TEST_F(FilesTest, ARunFolderHasOneWriter) {
  const fs::path run = tmp_ / "run";
  {
    const pipeline::FolderLock first(run, "test run", {});
    const std::string message = error_of([&] { pipeline::FolderLock second(run, "test run", {}); });
    EXPECT_NE(message.find("in use by another run"), std::string::npos) << message;
  }
  EXPECT_NO_THROW(pipeline::FolderLock again(run, "test run", {}));  // released with the first
  write_bytes(tmp_ / "file", "x");
  EXPECT_THROW(pipeline::FolderLock on_a_file(tmp_ / "file", "test run", {}), pipeline::Error);
}

// A folder without a .lock is the user's: its files of a run's names are never taken.
TEST_F(FilesTest, ARunFolderIsMarkedByItsLock) {
  const std::vector<std::string> outputs = {"metrics.json", "head.pt"};
  const fs::path mine = tmp_ / "mine", notes = tmp_ / "notes";
  fs::create_directories(mine);
  fs::create_directories(notes);
  write_bytes(mine / "head.pt", "my own");
  const std::string message = error_of([&] { pipeline::FolderLock lock(mine, "test run", outputs); });
  EXPECT_NE(message.find("head.pt"), std::string::npos) << message;
  EXPECT_NE(message.find(".lock"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(mine / ".lock"));
  EXPECT_EQ(read_text(mine / "head.pt"), "my own");

  // Other files are no obstacle, and a finished run's folder keeps its mark.
  write_bytes(notes / "notes.txt", "n");
  { const pipeline::FolderLock lock(notes, "test run", outputs); }
  EXPECT_TRUE(fs::exists(notes / ".lock"));
  write_bytes(notes / "head.pt", "written by the run");
  EXPECT_NO_THROW(pipeline::FolderLock again(notes, "test run", outputs));

  // A failed run takes its .lock back only when it wrote none of its outputs.
  const auto fail_in = [&](const fs::path& dir, const std::string& writes) {
    try {
      const pipeline::FolderLock lock(dir, "test run", outputs);
      if (!writes.empty()) write_bytes(dir / writes, "partial");
      throw std::runtime_error("the run failed");
    } catch (const std::runtime_error&) {
    }
  };
  fail_in(tmp_ / "failed_early", "");
  EXPECT_FALSE(fs::exists(tmp_ / "failed_early"));
  fail_in(tmp_ / "failed_late", "metrics.json");
  EXPECT_TRUE(fs::exists(tmp_ / "failed_late" / ".lock"));
  EXPECT_NO_THROW(pipeline::FolderLock resume(tmp_ / "failed_late", "test run", outputs));

  // The .lock names its stage: another stage's run folder is refused. An empty one (an
  // older run's) stays any stage's, even after a run of one failed in it.
  EXPECT_EQ(read_text(notes / ".lock"), "test run");
  const fs::path older = tmp_ / "older";
  fs::create_directories(older);
  write_bytes(older / ".lock", "\n");
  fail_in(older, "");
  EXPECT_EQ(read_text(older / ".lock"), "\n");
  EXPECT_NO_THROW(pipeline::FolderLock other(older, "other run", outputs));
  EXPECT_NE(error_of([&] { pipeline::FolderLock other(notes, "other run", outputs); }).find("test run folder"),
            std::string::npos);
  // A temporary's name of the user's is theirs too; a .lock that is no file is refused.
  const fs::path temps = tmp_ / "temps", linked = tmp_ / "linked";
  fs::create_directories(temps);
  write_bytes(temps / "metrics.json.tmp", "mine");
  EXPECT_THROW(pipeline::FolderLock lock(temps, "test run", outputs), pipeline::Error);
  fs::create_directories(linked);
  fs::create_symlink(tmp_ / "elsewhere", linked / ".lock");
  EXPECT_NE(error_of([&] { pipeline::FolderLock lock(linked, "test run", outputs); }).find("not a regular file"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(tmp_ / "elsewhere"));
}

// Ctrl-C unwinds no stack: the signal handler takes back what the run made before its
// outputs, and the process still ends by that signal.
TEST_F(FilesTest, AnInterruptedRunTakesBackItsLockAndFolders) {
  const std::vector<std::string> outputs = {"metrics.json"};
  const auto interrupted = [&](const fs::path& dir, const std::string& writes, int sig) {
    const pid_t child = ::fork();
    if (child == 0) {
      const pipeline::FolderLock lock(dir, "test run", outputs);
      if (!writes.empty()) write_bytes(dir / writes, "partial");
      ::raise(sig);
      ::_exit(0);  // not reached
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << "status " << status;
  };
  interrupted(tmp_ / "new" / "run", "", SIGINT);
  EXPECT_FALSE(fs::exists(tmp_ / "new"));
  fs::create_directories(tmp_ / "mine");
  write_bytes(tmp_ / "mine" / "notes.txt", "n");
  interrupted(tmp_ / "mine", "", SIGTERM);
  EXPECT_FALSE(fs::exists(tmp_ / "mine" / ".lock"));
  EXPECT_TRUE(fs::exists(tmp_ / "mine" / "notes.txt"));
  interrupted(tmp_ / "started", "metrics.json", SIGINT);  // resumable: stays a run folder
  EXPECT_TRUE(fs::exists(tmp_ / "started" / ".lock"));
}

// A link planted under the temporary's name (run/config.json.tmp -> ~/.bashrc) is
// replaced, never written through. (A full disk is tested on the stages, under a
// file-size limit: tests/hostile_test.cc's disk_full cases.)
TEST_F(FilesTest, APlantedTemporaryLinkIsNotFollowed) {
  write_bytes(tmp_ / "victim", "the user's file");
  const fs::path target = tmp_ / "config.json";
  fs::create_symlink(tmp_ / "victim", target.string() + ".tmp");
  pipeline::write_file_atomic(target, "{}\n");
  EXPECT_EQ(read_text(tmp_ / "victim"), "the user's file");
  EXPECT_EQ(read_text(target), "{}\n");
  EXPECT_FALSE(fs::exists(fs::symlink_status(target.string() + ".tmp")));
}

TEST_F(FilesTest, StaleTemporaryFoldersOfAKilledRunAreRemoved) {
  const fs::path target = tmp_ / "checkpoint";
  fs::create_directories(tmp_ / ".checkpoint.tmp-abc123");
  write_bytes(tmp_ / ".checkpoint.tmp-abc123" / "model.pt", "half of a gigabyte");
  fs::create_directories(tmp_ / ".checkpoint.tmp-important");  // not mkdtemp's pattern: the user's
  pipeline::replace_folder_atomically(
      target, [](const fs::path& t) { write_bytes(t / "loop.json", "{}"); }, [](const fs::path&) { return std::string(); });
  EXPECT_FALSE(fs::exists(tmp_ / ".checkpoint.tmp-abc123"));
  EXPECT_TRUE(fs::exists(tmp_ / ".checkpoint.tmp-important"));
  EXPECT_TRUE(fs::exists(target / "loop.json"));
}

TEST_F(FilesTest, OutputFileIsCheckedBeforeWork) {
  EXPECT_NO_THROW(pipeline::check_output_file(tmp_ / "new" / "deeper" / "cache.h5", "--out"));
  EXPECT_FALSE(fs::exists(tmp_ / "new"));  // made only when the file is written
  EXPECT_NE(error_of([&] { pipeline::check_output_file(tmp_.path(), "--out"); }).find("is a folder"),
            std::string::npos);
  write_bytes(tmp_ / "blocker", "x");
  EXPECT_THROW(pipeline::check_output_file(tmp_ / "blocker" / "cache.h5", "--out"), pipeline::Error);
}

}  // namespace
