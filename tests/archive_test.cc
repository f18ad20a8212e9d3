// Tests for pipeline/archive: unpacking, and refusing entries that would escape the
// target folder. The archives are built here with libarchive.
#include "pipeline/archive.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "pipeline/error.h"
#include "archive_util.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {
using testutil::random_bytes;
using testutil::read_text;

using testutil::Entry;
using testutil::write_tar_gz;

class ArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    out_ = dir_ / "out";
    fs::create_directory(out_);
  }

  // Expects extract_archive to refuse the archive, naming the entry.
  void expect_refused(const std::vector<Entry>& entries, const std::string& entry_name) {
    write_tar_gz(dir_ / "a.tar.gz", entries);
    const std::string message = testutil::error_of([&] { pipeline::extract_archive(dir_ / "a.tar.gz", out_); });
    EXPECT_NE(message.find("refusing"), std::string::npos) << message;
    EXPECT_NE(message.find(entry_name), std::string::npos) << message;
    EXPECT_NE(message.find((dir_ / "a.tar.gz").string()), std::string::npos) << message;
  }

  testutil::TempDir tmp_;
  fs::path dir_;
  fs::path out_;
};

TEST_F(ArchiveTest, UnpacksFilesFoldersAndInnerLinks) {
  write_tar_gz(dir_ / "a.tar.gz", {{"top/", "", Entry::Dir},
                                   {"top/a.bin", "alpha"},
                                   {"./top/sub/b.bin", "beta"},
                                   {"top/link", "a.bin", Entry::Symlink},
                                   {"top/hard", "top/a.bin", Entry::Hardlink}});
  EXPECT_EQ(pipeline::extract_archive(dir_ / "a.tar.gz", out_), 5u);
  EXPECT_EQ(read_text(out_ / "top/a.bin"), "alpha");
  EXPECT_EQ(read_text(out_ / "top/sub/b.bin"), "beta");
  EXPECT_TRUE(fs::is_symlink(out_ / "top/link"));
  EXPECT_EQ(read_text(out_ / "top/link"), "alpha");
  EXPECT_EQ(read_text(out_ / "top/hard"), "alpha");
}

TEST_F(ArchiveTest, RefusesDotDot) {
  expect_refused({{"top/ok.bin", "x"}, {"../evil", "evil"}}, "../evil");
  EXPECT_FALSE(fs::exists(dir_ / "evil"));
}

TEST_F(ArchiveTest, RefusesNestedDotDot) {
  expect_refused({{"top/../../evil", "evil"}}, "top/../../evil");
  EXPECT_FALSE(fs::exists(dir_ / "evil"));
}

TEST_F(ArchiveTest, RefusesAbsolutePaths) {
  const fs::path target = dir_ / "absolute-evil";
  expect_refused({{target.string(), "evil"}}, target.string());
  EXPECT_FALSE(fs::exists(target));
}

TEST_F(ArchiveTest, RefusesSymlinksLeadingOutside) {
  expect_refused({{"top/link", "../../outside", Entry::Symlink}}, "top/link");
  EXPECT_FALSE(fs::exists(fs::symlink_status(out_ / "top/link")));
  expect_refused({{"link", "/etc", Entry::Symlink}}, "link");
  EXPECT_FALSE(fs::exists(fs::symlink_status(out_ / "link")));
}

// Lexically inside, physically outside: "up" points at its own folder, then a later
// link climbs "up/../.." -- which normalizes to the folder, but resolves to its
// grandparent on disk. Any ".." in a link target is refused, so no chain climbs.
TEST_F(ArchiveTest, RefusesSymlinkChainsThatClimbThroughEarlierLinks) {
  expect_refused({{"top/up", ".", Entry::Symlink}, {"top/x", "up/../..", Entry::Symlink}}, "top/x");
  EXPECT_FALSE(fs::exists(fs::symlink_status(out_ / "top/x")));
  expect_refused({{"top/sub/", "", Entry::Dir}, {"top/sub/y", "../a.bin", Entry::Symlink}}, "top/sub/y");
}

TEST_F(ArchiveTest, LimitsRefuseLinksUnexpectedAndOversizedEntries) {
  pipeline::UnpackLimits limits;
  limits.links = false;
  limits.entries = {{"top", 0}, {"top/a.bin", 10}};
  write_tar_gz(dir_ / "ok.tar.gz", {{"top/", "", Entry::Dir}, {"top/a.bin", "0123456789"}});
  EXPECT_EQ(pipeline::extract_archive(dir_ / "ok.tar.gz", out_, limits), 2u);

  const auto refused = [&](const std::vector<Entry>& entries, const std::string& needle) {
    fs::remove_all(out_);
    fs::create_directories(out_);
    write_tar_gz(dir_ / "bad.tar.gz", entries);
    const std::string message = testutil::error_of([&] { pipeline::extract_archive(dir_ / "bad.tar.gz", out_, limits); });
    EXPECT_NE(message.find(needle), std::string::npos) << message;
  };
  refused({{"top/a.bin", "01234567890"}}, "more than the 10");
  refused({{"top/b.bin", "x"}}, "top/b.bin");
  refused({{"top/a.bin", "a.bin", Entry::Symlink}}, "is a link");
  refused({{"top/a.bin/", "", Entry::Dir}}, "top/a.bin");
  EXPECT_FALSE(fs::exists(out_ / "top/a.bin"));
}

TEST_F(ArchiveTest, RefusesHardlinksLeadingOutside) {
  expect_refused({{"top/hard", "../outside", Entry::Hardlink}}, "top/hard");
  expect_refused({{"top/hard", "/etc/passwd", Entry::Hardlink}}, "top/hard");
  EXPECT_FALSE(fs::exists(out_ / "top/hard"));
}

TEST_F(ArchiveTest, NeverWritesThroughASymlink) {
  write_tar_gz(dir_ / "a.tar.gz", {{"top/sub/", "", Entry::Dir},
                                   {"top/link", "sub", Entry::Symlink},
                                   {"top/link/x.bin", "through"}});
  EXPECT_THROW(pipeline::extract_archive(dir_ / "a.tar.gz", out_), pipeline::Error);
  EXPECT_FALSE(fs::exists(out_ / "top/sub/x.bin"));
}

TEST_F(ArchiveTest, TruncatedArchiveIsAnError) {
  write_tar_gz(dir_ / "a.tar.gz", {{"top/a.bin", random_bytes(200000, 1)}, {"top/b.bin", random_bytes(200000, 2)}});
  fs::resize_file(dir_ / "a.tar.gz", fs::file_size(dir_ / "a.tar.gz") / 2);
  const std::string message = testutil::error_of([&] { pipeline::extract_archive(dir_ / "a.tar.gz", out_); });
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
}

TEST_F(ArchiveTest, NotAnArchiveIsAnError) {
  std::ofstream(dir_ / "a.tar.gz") << "this is not an archive, just some text that goes on for a while";
  EXPECT_THROW(pipeline::extract_archive(dir_ / "a.tar.gz", out_), pipeline::Error);
}

TEST_F(ArchiveTest, MissingArchiveIsAnError) {
  EXPECT_THROW(pipeline::extract_archive(dir_ / "nope.tar.gz", out_), pipeline::Error);
}

TEST_F(ArchiveTest, UnwritableTargetIsAnError) {
  write_tar_gz(dir_ / "a.tar.gz", {{"top/a.bin", "alpha"}});
  std::ofstream(dir_ / "blocker") << "a file where a folder should be";
  const std::string message =
      testutil::error_of([&] { pipeline::extract_archive(dir_ / "a.tar.gz", dir_ / "blocker"); });
  EXPECT_NE(message.find("cannot write"), std::string::npos) << message;
}

}  // namespace
