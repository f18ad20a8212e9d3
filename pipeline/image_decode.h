#pragma once
// JPEG and PNG files decoded to 8-bit RGB (and RGB written as PNG, for synthetic image
// folders) as Pillow's Image.open(f).convert("RGB")
// gives them (torchvision ImageFolder's loader), with libjpeg-turbo and libpng.
//
//   JPEG  libjpeg's defaults (as Pillow: integer DCT, fancy upsampling); grayscale
//         replicated to R=G=B; CMYK (Adobe's inverted) converted as Pillow's cmyk2rgb
//   PNG   palette -> its colours (transparency dropped), gray -> R=G=B, alpha dropped,
//         1/2/4-bit gray scaled to 0..255, 16-bit RGB -> the high byte, 16-bit gray ->
//         clipped to 255 (Pillow opens it as a 32-bit "I" image)
// Anything else is refused by its first bytes, naming its type (BMP, GIF, TIFF, WebP...).
// Thread safety: no shared state; decode from any thread.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace pipeline {

struct RgbImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;  // height * width * 3 bytes, rows top to bottom, R G B
};

// The most pixels a decoded image may have (Pillow's decompression-bomb error limit).
inline constexpr int64_t kMaxImagePixels = 178956970;

// Decodes `file`. Throws pipeline::Error naming the file when it is missing, not a
// regular file, of another type, truncated or corrupt (any libjpeg warning included:
// a JPEG that decodes with warnings is damaged), or larger than kMaxImagePixels.
RgbImage decode_image(const std::filesystem::path& file);

// The same from bytes in memory; `name` is what errors call them.
RgbImage decode_image_bytes(const std::string& bytes, const std::string& name);

// `image` as an 8-bit RGB PNG (lossless: decode_image gives the same pixels back),
// written atomically to `file` (files.h). Throws pipeline::Error naming the file.
void write_png(const RgbImage& image, const std::filesystem::path& file);

}  // namespace pipeline
