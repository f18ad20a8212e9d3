#include "pipeline/image_decode.h"

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "pipeline/error.h"
#include "pipeline/files.h"

namespace pipeline {
namespace {

constexpr uintmax_t kMaxFileBytes = uintmax_t{1} << 30;

std::string image_type(const std::string& b) {
  auto starts = [&](const char* magic, size_t n, size_t at = 0) { return b.size() >= at + n && b.compare(at, n, magic, n) == 0; };
  if (starts("\xff\xd8\xff", 3)) return "JPEG";
  if (starts("\x89PNG\r\n\x1a\n", 8)) return "PNG";
  if (starts("BM", 2)) return "BMP";
  if (starts("GIF8", 4)) return "GIF";
  if (starts("II*\0", 4) || starts("MM\0*", 4)) return "TIFF";
  if (starts("RIFF", 4) && starts("WEBP", 4, 8)) return "WebP";
  if (b.size() >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6') return "PPM/PGM";
  return "";
}

void check_size(int64_t width, int64_t height, const std::string& name) {
  if (width < 1 || height < 1) fail("image {} has no pixels ({}x{})", name, width, height);
  if (width * height > kMaxImagePixels) {
    fail("image {} is {}x{} pixels, more than the {} a decoded image may have (a decompression bomb?)", name, width,
         height, kMaxImagePixels);
  }
}

// ---- JPEG -------------------------------------------------------------------------

struct JpegError {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_error_exit(j_common_ptr cinfo) {
  auto* error = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, error->message);
  std::longjmp(error->jump, 1);
}

// A warning (corrupt data, premature end of the file) makes the image damaged.
void jpeg_warning(j_common_ptr cinfo, int level) {
  if (level < 0) jpeg_error_exit(cinfo);
}

// Pillow's cmyk2rgb on Adobe's inverted CMYK (what libjpeg gives for Photoshop files).
inline uint8_t from_cmyk(int ink, int nk) {
  const int tmp = ink * nk + 128;
  return static_cast<uint8_t>(std::clamp(nk - ((tmp + (tmp >> 8)) >> 8), 0, 255));
}

RgbImage decode_jpeg(const std::string& bytes, const std::string& name) {
  jpeg_decompress_struct cinfo;
  JpegError error;
  RgbImage image;
  std::vector<uint8_t> row;
  std::string message;
  cinfo.err = jpeg_std_error(&error.manager);
  error.manager.error_exit = jpeg_error_exit;
  error.manager.emit_message = jpeg_warning;
  if (setjmp(error.jump)) {
    jpeg_destroy_decompress(&cinfo);
    fail("image {} is a damaged JPEG: {}", name, error.message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  const bool gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
  cinfo.out_color_space = cmyk ? JCS_CMYK : gray ? JCS_GRAYSCALE : JCS_RGB;
  if (static_cast<int64_t>(cinfo.image_width) * cinfo.image_height > kMaxImagePixels) {
    const int64_t w = cinfo.image_width, h = cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    check_size(w, h, name);
  }
  jpeg_start_decompress(&cinfo);
  image.width = cinfo.output_width;
  image.height = cinfo.output_height;
  image.pixels.resize(static_cast<size_t>(image.width * image.height * 3));
  row.resize(static_cast<size_t>(image.width) * static_cast<size_t>(cinfo.output_components));
  // Pillow reads every CMYK JPEG as Adobe's inverted inks ("CMYK;I"), and so writes them.
  const bool inverted = cmyk;
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW rows[1] = {row.data()};
    const auto y = static_cast<int64_t>(cinfo.output_scanline);
    jpeg_read_scanlines(&cinfo, rows, 1);
    uint8_t* out = image.pixels.data() + y * image.width * 3;
    for (int64_t x = 0; x < image.width; ++x) {
      if (gray) {
        out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = row[static_cast<size_t>(x)];
      } else if (cmyk) {
        const uint8_t* p = &row[static_cast<size_t>(4 * x)];
        int c = p[0], m = p[1], ye = p[2], k = p[3];
        if (inverted) c = 255 - c, m = 255 - m, ye = 255 - ye, k = 255 - k;
        const int nk = 255 - k;
        out[3 * x] = from_cmyk(c, nk);
        out[3 * x + 1] = from_cmyk(m, nk);
        out[3 * x + 2] = from_cmyk(ye, nk);
      } else {
        std::memcpy(out + 3 * x, &row[static_cast<size_t>(3 * x)], 3);
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return image;
}

// ---- PNG --------------------------------------------------------------------------

struct PngSource {
  const std::string* bytes;
  size_t offset;
};

void png_read_bytes(png_structp png, png_bytep out, png_size_t n) {
  auto* source = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > source->bytes->size() - source->offset) png_error(png, "the file is truncated");
  std::memcpy(out, source->bytes->data() + source->offset, n);
  source->offset += n;
}

struct PngMessage {
  char text[256] = {0};
};

void png_fail(png_structp png, png_const_charp message) {
  auto* m = static_cast<PngMessage*>(png_get_error_ptr(png));
  std::snprintf(m->text, sizeof m->text, "%s", message);
  png_longjmp(png, 1);
}

void png_warn(png_structp, png_const_charp) {}

RgbImage decode_png(const std::string& bytes, const std::string& name) {
  PngMessage message;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &message, png_fail, png_warn);
  if (!png) fail("libpng could not start reading {}", name);
  png_infop info = png_create_info_struct(png);
  RgbImage image;
  std::vector<uint8_t> data;
  std::vector<png_bytep> rows;
  int64_t width = 0, height = 0;
  bool too_large = false;
  PngSource source{&bytes, 0};
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    fail("image {} is a damaged PNG: {}", name, message.text);
  }
  if (!info) png_error(png, "out of memory");
  png_set_read_fn(png, &source, png_read_bytes);
  png_set_user_limits(png, 1u << 30, 1u << 30);
  png_read_info(png, info);
  width = png_get_image_width(png, info);
  height = png_get_image_height(png, info);
  too_large = width * height > kMaxImagePixels;
  if (too_large) png_error(png, "too many pixels");
  const int color = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  // Palette images take their colours (Pillow's convert("RGB") ignores transparency);
  // low-depth gray is scaled to 8 bits; 16-bit gray is read whole and clipped below.
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if ((color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) && depth < 8) {
    png_set_expand_gray_1_2_4_to_8(png);
  }
  const bool gray16 = depth == 16 && (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA);
  if (depth == 16 && !gray16) png_set_strip_16(png);
  if (gray16) png_set_swap(png);  // host order for the clip below
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  const int channels = png_get_channels(png, info);
  data.resize(row_bytes * static_cast<size_t>(height));
  rows.resize(static_cast<size_t>(height));
  for (int64_t y = 0; y < height; ++y) rows[static_cast<size_t>(y)] = data.data() + static_cast<size_t>(y) * row_bytes;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);

  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(width * height * 3));
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* in = rows[static_cast<size_t>(y)];
    uint8_t* out = image.pixels.data() + y * width * 3;
    for (int64_t x = 0; x < width; ++x) {
      if (gray16) {
        uint16_t v;
        std::memcpy(&v, in + static_cast<size_t>(x * channels) * 2, 2);
        out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = static_cast<uint8_t>(std::min<int>(v, 255));
      } else if (channels <= 2) {  // gray, gray + alpha
        out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[x * channels];
      } else {  // RGB, RGBA
        std::memcpy(out + 3 * x, in + x * channels, 3);
      }
    }
  }
  return image;
}

}  // namespace

RgbImage decode_image_bytes(const std::string& bytes, const std::string& name) {
  const std::string type = image_type(bytes);
  if (type == "JPEG") return decode_jpeg(bytes, name);
  if (type == "PNG") return decode_png(bytes, name);
  if (type.empty()) fail("{} is not an image this program reads (neither JPEG nor PNG by its first bytes)", name);
  fail("{} is a {} image; only JPEG and PNG are decoded (convert it, or remove it)", name, type);
}

RgbImage decode_image(const std::filesystem::path& file) {
  return decode_image_bytes(read_file(file, kMaxFileBytes), file.string());
}

namespace {

void png_append(png_structp png, png_bytep data, png_size_t n) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), n);
}

void png_flush(png_structp) {}

}  // namespace

void write_png(const RgbImage& image, const std::filesystem::path& file) {
  if (image.width < 1 || image.height < 1 || image.pixels.size() != static_cast<size_t>(image.width * image.height * 3)) {
    fail("cannot write {}: the image is empty or its pixels do not match its size", file.string());
  }
  PngMessage message;
  std::string bytes;
  std::vector<png_const_bytep> rows(static_cast<size_t>(image.height));
  for (int64_t y = 0; y < image.height; ++y) rows[static_cast<size_t>(y)] = image.pixels.data() + y * image.width * 3;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &message, png_fail, png_warn);
  if (!png) fail("libpng could not start writing {}", file.string());
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    fail("cannot encode {} as PNG: {}", file.string(), message.text);
  }
  if (!info) png_error(png, "out of memory");
  png_set_write_fn(png, &bytes, png_append, png_flush);
  png_set_IHDR(png, info, static_cast<png_uint_32>(image.width), static_cast<png_uint_32>(image.height), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, const_cast<png_bytepp>(rows.data()));
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  write_file_atomic(file, bytes);
}

}  // namespace pipeline
