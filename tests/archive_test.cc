// Tests for pipeline/archive: unpacking, and refusing entries that would escape the
// target folder. The archives are built here with libarchive.
#include "pipeline/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "pipeline/error.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {
using testutil::random_bytes;
using testutil::read_all;

struct Entry {
  enum Kind { File, Dir, Symlink, Hardlink };
  std::string name;
  std::string data;  // File: contents; Symlink/Hardlink: target
  Kind kind = File;
};

void write_tar_gz(const fs::path& file, const std::vector<Entry>& entries) {
  struct archive* out = archive_write_new();
  archive_write_add_filter_gzip(out);
  archive_write_set_format_pax_restricted(out);
  ASSERT_EQ(archive_write_open_filename(out, file.c_str()), ARCHIVE_OK);
  for (const Entry& e : entries) {
    struct archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, e.name.c_str());
    switch (e.kind) {
      case Entry::File:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_perm(entry, 0644);
        archive_entry_set_size(entry, static_cast<la_int64_t>(e.data.size()));
        break;
      case Entry::Dir:
        archive_entry_set_filetype(entry, AE_IFDIR);
        archive_entry_set_perm(entry, 0755);
        break;
      case Entry::Symlink:
        archive_entry_set_filetype(entry, AE_IFLNK);
        archive_entry_set_perm(entry, 0777);
        archive_entry_set_symlink(entry, e.data.c_str());
        break;
      case Entry::Hardlink:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_perm(entry, 0644);
        archive_entry_set_hardlink(entry, e.data.c_str());
        archive_entry_set_size(entry, 0);
        break;
    }
    ASSERT_EQ(archive_write_header(out, entry), ARCHIVE_OK) << archive_error_string(out);
    if (e.kind == Entry::File && !e.data.empty()) {
      ASSERT_EQ(archive_write_data(out, e.data.data(), e.data.size()), static_cast<la_ssize_t>(e.data.size()));
    }
    archive_entry_free(entry);
  }
  ASSERT_EQ(archive_write_close(out), ARCHIVE_OK);
  archive_write_free(out);
}



class ArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "archive_test-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    out_ = dir_ / "out";
    fs::create_directory(out_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Expects extract_archive to refuse the archive, naming the entry.
  void expect_refused(const std::vector<Entry>& entries, const std::string& entry_name) {
    write_tar_gz(dir_ / "a.tar.gz", entries);
    try {
      pipeline::extract_archive(dir_ / "a.tar.gz", out_);
      FAIL() << "expected pipeline::Error for " << entry_name;
    } catch (const pipeline::Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("refusing"), std::string::npos) << message;
      EXPECT_NE(message.find(entry_name), std::string::npos) << message;
      EXPECT_NE(message.find((dir_ / "a.tar.gz").string()), std::string::npos) << message;
    }
  }

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
  EXPECT_EQ(read_all(out_ / "top/a.bin"), "alpha");
  EXPECT_EQ(read_all(out_ / "top/sub/b.bin"), "beta");
  EXPECT_TRUE(fs::is_symlink(out_ / "top/link"));
  EXPECT_EQ(read_all(out_ / "top/link"), "alpha");
  EXPECT_EQ(read_all(out_ / "top/hard"), "alpha");
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
  try {
    pipeline::extract_archive(dir_ / "a.tar.gz", out_);
    FAIL() << "expected pipeline::Error";
  } catch (const pipeline::Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
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
  try {
    pipeline::extract_archive(dir_ / "a.tar.gz", dir_ / "blocker");
    FAIL() << "expected pipeline::Error";
  } catch (const pipeline::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot write"), std::string::npos) << e.what();
  }
}

}  // namespace
