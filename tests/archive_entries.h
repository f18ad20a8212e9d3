#pragma once
// Writing plain entries into an open libarchive writer, for the tests and the fuzzer
// (no GoogleTest here: fuzz-parsers does not link it).

#include <archive.h>
#include <archive_entry.h>

#include <string>
#include <utility>
#include <vector>

namespace testutil {

// (name, data) pairs: a name ending in '/' is a folder, any other a file holding data.
using PlainEntries = std::vector<std::pair<std::string, std::string>>;

inline void write_plain_entries(struct archive* a, const PlainEntries& entries) {
  for (const auto& [name, data] : entries) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, !name.empty() && name.back() == '/' ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
    archive_write_header(a, e);
    if (!data.empty()) archive_write_data(a, data.data(), data.size());
    archive_entry_free(e);
  }
}

}  // namespace testutil
