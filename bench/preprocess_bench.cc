// Preprocessing throughput (resize 32 -> S + normalize) on 1 thread and on all, and its
// ratio to AlexNet's forward pass at the same size: preprocessing must never be what
// the model waits for. Target (issue): >= 10,000 images/s on 2 cores at 224 px.
// Then the image-folder path: photo-sized JPEGs (500 x 375, quality 90, encoded here with
// libjpeg-turbo) decoded + Resize(256) + CenterCrop(224) on 1 thread and on all, against
// the fp32 forward pass of AlexNet and ResNet-50 at 224 px: decoding must not be what
// bounds extraction from a folder.
#include <tbb/global_control.h>

#include <algorithm>
#include <thread>
#include <algorithm>

#include <jpeglib.h>
#include <tbb/parallel_for.h>

#include <cstdio>
#include <random>
#include <vector>

#include "bench_util.h"
#include "pipeline/image_decode.h"
#include "pipeline/preprocess.h"

namespace {

// A photo-like JPEG: smooth colour gradients with noise, `width` x `height`, quality 90.
std::string photo_jpeg(int width, int height, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(-20, 20);
  std::vector<uint8_t> rgb(static_cast<size_t>(width * height * 3));
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < 3; ++c) {
        const int v = (x * (c + 1) * 255 / width + y * (3 - c) * 255 / height) / 3 + noise(rng);
        rgb[static_cast<size_t>((y * width + x) * 3 + c)] = static_cast<uint8_t>(std::clamp(v, 0, 255));
      }
    }
  }
  jpeg_compress_struct cinfo;
  jpeg_error_mgr error;
  cinfo.err = jpeg_std_error(&error);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 90, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = rgb.data() + static_cast<size_t>(cinfo.next_scanline) * static_cast<size_t>(width) * 3;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
  return out;
}

// Images per second of decode + Resize(256) + CenterCrop(224) over `files`, serially or TBB-parallel.
double folder_rate(const std::vector<std::string>& files, bool parallel, int rounds) {
  auto one = [&](int64_t i) {
    const pipeline::RgbImage image = pipeline::decode_image_bytes(files[static_cast<size_t>(i)], "bench");
    (void)pipeline::resize_and_center_crop(image.pixels.data(), image.width, image.height, 256, 224);
  };
  const auto n = static_cast<int64_t>(files.size());
  return static_cast<double>(n * rounds) / bench::seconds([&] {
           for (int r = 0; r < rounds; ++r) {
             if (parallel) {
               tbb::parallel_for(int64_t{0}, n, one);
             } else {
               for (int64_t i = 0; i < n; ++i) one(i);
             }
           }
         });
}

}  // namespace

int main(int argc, char** argv) {
  bench::print_machine();
  const int64_t side = argc > 1 ? std::atoll(argv[1]) : 224;
  const int64_t batch = 256, rounds = 8;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const at::Tensor images = torch::randint(0, 256, {batch, 3, 32, 32}, torch::kUInt8);
  pipeline::Preprocessor preprocess(side, pipeline::normalization_by_name("imagenet"));
  // Both layouts: NCHW (CUDA batches) and channels-last, which CPU extraction and
  // fine-tuning write straight into; the target is judged on the slower of the two.
  at::Tensor nchw = torch::empty({batch, 3, side, side});
  at::Tensor channels_last = torch::empty({batch, 3, side, side}, at::MemoryFormat::ChannelsLast);

  auto rate = [&](bool parallel, at::Tensor& out) {
    preprocess.set_parallel(parallel);
    preprocess.into(images, out);  // warm-up: page in the output
    return batch * rounds / bench::seconds([&] {
             for (int64_t r = 0; r < rounds; ++r) preprocess.into(images, out);
           });
  };
  const double one = rate(false, nchw), one_cl = rate(false, channels_last);
  double all = 0, all_cl = 0;
  {
    tbb::global_control threads(tbb::global_control::max_allowed_parallelism, cores);
    all = rate(true, nchw);
    all_cl = rate(true, channels_last);
  }
  pipeline::Compute compute = pipeline::resolve_compute({"cpu", "fp32", cores});
  const double forward = bench::bare_forward_rate(pipeline::backbone("alexnet"), side, 64, 3, compute);
  std::printf("preprocess %lld px, NCHW: 1 thread %.0f images/s, %d threads %.0f images/s (x%.2f)\n",
              static_cast<long long>(side), one, cores, all, all / one);
  std::printf("preprocess %lld px, channels-last: 1 thread %.0f images/s, %d threads %.0f images/s (x%.2f)\n",
              static_cast<long long>(side), one_cl, cores, all_cl, all_cl / one_cl);
  const double slower = std::min(all, all_cl);
  std::printf("AlexNet forward (fp32, channels-last, %d threads): %.0f images/s\n", cores, forward);
  std::printf("ratio preprocessing / forward pass: %.1f (preprocessing is %.1f%% of the forward pass's time)\n",
              slower / forward, 100.0 * forward / slower);
  std::printf("target >= 10000 images/s on 2 cores at 224 px: %s\n", slower >= 10000 ? "met" : "NOT met");

  // The image-folder path.
  std::vector<std::string> jpegs;
  for (unsigned i = 0; i < 64; ++i) jpegs.push_back(photo_jpeg(500, 375, i));
  (void)folder_rate(jpegs, false, 1);  // warm-up
  const double folder_one = folder_rate(jpegs, false, 2);
  double folder_all = 0;
  {
    tbb::global_control threads(tbb::global_control::max_allowed_parallelism, cores);
    folder_all = folder_rate(jpegs, true, 4);
  }
  const double resnet50 = bench::bare_forward_rate(pipeline::backbone("resnet50"), 224, 32, 2, compute);
  const double alexnet224 = side == 224 ? forward : bench::bare_forward_rate(pipeline::backbone("alexnet"), 224, 64, 3, compute);
  std::printf("image folder: 500x375 JPEG decode + Resize(256) + CenterCrop(224): 1 thread %.0f images/s, %d threads "
              "%.0f images/s (x%.2f)\n",
              folder_one, cores, folder_all, folder_all / folder_one);
  std::printf("fp32 forward at 224 px: AlexNet %.0f images/s, ResNet-50 %.1f images/s\n", alexnet224, resnet50);
  std::printf("ratio folder decoding / forward pass: AlexNet %.1f, ResNet-50 %.1f (decoding is %.0f%% and %.1f%% of "
              "the forward pass's time)\n",
              folder_all / alexnet224, folder_all / resnet50, 100.0 * alexnet224 / folder_all,
              100.0 * resnet50 / folder_all);
  return 0;
}
