// Label one image with an aesipe TorchScript file from C++ (libtorch only).
//
//   aesipe_label_cpp MODEL.pt IMAGE.ppm LABELS.pgm [--op-library libaesipe_pamr.so]
//
// Reads a binary PPM (P6, 8-bit RGB) to stay free of image libraries, writes the class indices as a
// binary PGM (P5). Pre-processing follows the file's metadata (extra file "aesipe.json"): scale the
// pixels, pad to the size divisor with pad_value (the graph normalises itself), run, crop the labels.
// Files exported with the fused PAMR op list "custom_ops": pass --op-library to load it first.
#include <torch/script.h>

#include <dlfcn.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;  // height * width * 3
};

Image read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::string magic;
  int max_value = 0;
  Image image;
  in >> magic >> image.width >> image.height >> max_value;
  if (magic != "P6" || max_value != 255) throw std::runtime_error(path + ": expected an 8-bit binary PPM (P6)");
  in.get();  // the single whitespace after the header
  image.rgb.resize(static_cast<size_t>(image.width) * image.height * 3);
  in.read(reinterpret_cast<char*>(image.rgb.data()), static_cast<std::streamsize>(image.rgb.size()));
  if (!in) throw std::runtime_error(path + ": truncated PPM");
  return image;
}

// The metadata is JSON written by aesipe-export; the few numbers we need are found by key.
// (A real application would use a JSON library; this keeps the example dependency-free.)
std::string raw_value(const std::string& json, const std::string& key) {
  auto at = json.find("\"" + key + "\"");
  if (at == std::string::npos) throw std::runtime_error("metadata lacks " + key);
  at = json.find(':', at) + 1;
  while (json[at] == ' ') ++at;
  if (json[at] == '"') {  // a JSON string: may itself hold escaped JSON
    std::string out;
    for (++at; json[at] != '"'; ++at) {
      if (json[at] == '\\') ++at;
      out += json[at];
    }
    return out;
  }
  auto end = json.find_first_of(",}", at);
  if (json[at] == '[') end = json.find(']', at) + 1;
  return json.substr(at, end - at);
}

std::vector<double> numbers(std::string text) {
  for (char& c : text)
    if (c == '[' || c == ']' || c == ',') c = ' ';
  std::istringstream in(text);
  std::vector<double> out;
  for (double v; in >> v;) out.push_back(v);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: aesipe_label_cpp MODEL.pt IMAGE.ppm LABELS.pgm [--op-library LIB.so]\n";
    return 2;
  }
  try {
    if (argc >= 6 && std::string(argv[4]) == "--op-library" && !dlopen(argv[5], RTLD_NOW | RTLD_GLOBAL)) {
      throw std::runtime_error(std::string("cannot load op library: ") + dlerror());
    }
    torch::jit::ExtraFilesMap extra{{"aesipe.json", ""}};
    auto module = torch::jit::load(argv[1], torch::kCPU, extra);
    module.eval();
    const std::string& meta = extra["aesipe.json"];
    if (raw_value(meta, "model_kind") != "segmenter")
      throw std::runtime_error("this example handles segmenters (pseudo-labellers also need a tags input)");
    const std::string format = raw_value(meta, "input_format");
    const double scale = numbers(raw_value(format, "scale")).at(0);
    const auto pad = numbers(raw_value(format, "pad_value"));
    const int divisor = static_cast<int>(numbers(raw_value(format, "size_divisor")).at(0));

    Image image = read_ppm(argv[2]);
    const int padded_h = (image.height + divisor - 1) / divisor * divisor;
    const int padded_w = (image.width + divisor - 1) / divisor * divisor;
    auto input = torch::empty({1, 3, padded_h, padded_w}, torch::kFloat32);
    auto pixels = torch::from_blob(image.rgb.data(), {image.height, image.width, 3}, torch::kUInt8);
    for (int c = 0; c < 3; ++c) input[0][c].fill_(pad.at(c));
    input.index_put_({0, torch::indexing::Slice(), torch::indexing::Slice(0, image.height),
                      torch::indexing::Slice(0, image.width)},
                     pixels.permute({2, 0, 1}).to(torch::kFloat32) * scale);

    torch::NoGradGuard no_grad;
    auto outputs = module.forward({input}).toTuple();
    auto labels = outputs->elements()[1].toTensor()[0]
                      .index({torch::indexing::Slice(0, image.height), torch::indexing::Slice(0, image.width)})
                      .contiguous();

    std::ofstream out(argv[3], std::ios::binary);
    out << "P5\n" << image.width << " " << image.height << "\n255\n";
    out.write(reinterpret_cast<const char*>(labels.data_ptr<std::uint8_t>()), labels.numel());
    std::cout << argv[3] << ": " << image.width << "x" << image.height << "\n";
  } catch (const std::exception& error) {
    std::cerr << "aesipe_label_cpp: error: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
