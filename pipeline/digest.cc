#include "pipeline/digest.h"

#include <openssl/evp.h>

#include <fstream>
#include <memory>
#include <vector>

#include "pipeline/error.h"
#include "pipeline/files.h"

namespace pipeline {
namespace {

const EVP_MD* evp_for(DigestAlgorithm algorithm) {
  return algorithm == DigestAlgorithm::Md5 ? EVP_md5() : EVP_sha256();
}

struct ContextDeleter {
  void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
};
using Context = std::unique_ptr<EVP_MD_CTX, ContextDeleter>;

Context start(DigestAlgorithm algorithm) {
  Context context(EVP_MD_CTX_new());
  if (!context || EVP_DigestInit_ex(context.get(), evp_for(algorithm), nullptr) != 1) {
    fail("OpenSSL could not start a digest");
  }
  return context;
}

std::string finish_hex(EVP_MD_CTX* context) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(context, digest, &length) != 1) fail("OpenSSL could not finish a digest");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

}  // namespace

std::string file_digest(const std::filesystem::path& file, DigestAlgorithm algorithm) {
  require_regular_file(file, "file");  // a link to /dev/zero would be hashed forever
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("cannot open {} to compute its digest", file.string());
  Context context = start(algorithm);
  std::vector<char> block(1 << 20);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(context.get(), block.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) fail("read error in {} while computing its digest", file.string());
  return finish_hex(context.get());
}

std::string bytes_digest(const std::string& bytes, DigestAlgorithm algorithm) {
  Context context = start(algorithm);
  EVP_DigestUpdate(context.get(), bytes.data(), bytes.size());
  return finish_hex(context.get());
}

}  // namespace pipeline
