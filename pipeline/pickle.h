#pragma once
// Reads what Python's torch.save writes for a dict of tensors (a state dict), with no
// Python and the same on LibTorch 1.13 and 2.x. (LibTorch 1.13's torch::pickle_load
// cannot read torchvision's weights: its unpickler turns collections.OrderedDict, which
// every state dict is, into None.)
//
// Two file formats. torch.save's zip archive (PyTorch >= 1.6), entries stored uncompressed:
//   <prefix>/data.pkl        the saved object, pickled (protocol 2); each tensor's storage
//                            is a persistent id ('storage', torch.<T>Storage, key,
//                            location, numel) naming the entry below
//   <prefix>/data/<key>      the storage's raw elements, little-endian, numel * itemsize bytes
//   <prefix>/version         "3\n"; 2.x adds byteorder ("little"), .format_version, ...
// <prefix> is the archive name chosen at save time: "archive", or the file's stem
// (torchvision's weights use "alexnet-owt-7be5be79"). Entries other than these are ignored.
// And the legacy format (PyTorch < 1.6, or _use_new_zipfile_serialization=False; e.g.
// torchvision's vgg16-397923af.pth, alexnet-owt-4df8aa71.pth, resnet18-5c106cde.pth):
// five pickles -- magic number, protocol version 1001, sys_info (little_endian must be
// True), the saved object (persistent ids carry a 6th field, None or a storage view
// (key, offset, numel)), the list of storage keys -- then per listed key an int64 numel
// and the storage's raw bytes. Its pickles must fit in the first 64 MiB. The still older
// tar format (before PyTorch 0.1.10) gets an error saying so.
//
// The pickle reader is deliberately small: it interprets exactly the opcodes torch.save
// emits for a dict of tensors -- PROTO, GLOBAL, BINPUT, LONG_BINPUT, BINGET, LONG_BINGET,
// MARK, EMPTY_DICT, EMPTY_TUPLE, EMPTY_LIST, TUPLE, TUPLE1-3, BINUNICODE,
// SHORT_BINUNICODE, BININT, BININT1, BININT2, LONG1 (up to 8 bytes), NEWTRUE, NEWFALSE,
// NONE, BINFLOAT, REDUCE, BINPERSID, SETITEM, SETITEMS, APPEND, APPENDS, BUILD, STOP --
// and these globals only: collections.OrderedDict, torch._utils._rebuild_tensor_v2,
// torch._utils._rebuild_tensor (PyTorch 0.3), torch._utils._rebuild_parameter, torch.{Float,Double,Half,BFloat16,Long,Int,Short,
// Char,Byte,Bool}Storage. Nothing is executed; any other opcode or global is an Error
// naming the file, the opcode (or global) and its byte offset (in data.pkl; in a legacy
// file, in the file). BUILD on a
// dict (the state dict's `_metadata` attribute) is accepted and its state ignored.
// Every length, index, shape, stride and element count is bounds-checked, so bad input
// throws, never crashes. Only the storages the pickle names are read (a second pass
// over the zip), and together they may not hold more bytes than the file: torch.save
// stores them uncompressed, so a compressed entry cannot inflate memory. A legacy
// file's listed storages must be exactly those its object names, each with the numel
// the object gives it, and inside the file.
//
// Thread safety: the functions below share no state; call them from any thread.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pipeline {

// (key, tensor) pairs in the saved dict's order.
using TensorDict = std::vector<std::pair<std::string, at::Tensor>>;

// Reads a torch.save file (zip or legacy) whose object is a dict (or OrderedDict) of str -> tensor.
// Tensors come back on the CPU with the saved dtype, shape, strides and storage offset;
// tensors that shared a storage when saved share one here (like torch.load).
// Throws pipeline::Error naming `file` when it is missing or unreadable, in the tar
// format (says so and how to re-save it), a truncated or corrupt zip or legacy file,
// lacks data.pkl or a storage it refers to, uses pickle features outside the list
// above, or holds something other than a dict of tensors.
TensorDict read_torch_save_dict(const std::filesystem::path& file);

// Resolves a persistent id: returns the storage saved under `key` as a 1-D CPU tensor
// of `dtype` with exactly `numel` elements, or throws pipeline::Error.
using StorageLoader =
    std::function<at::Tensor(const std::string& key, at::ScalarType dtype, int64_t numel)>;

// Interprets the bytes of a data.pkl (the part of read_torch_save_dict that does not
// touch files; tests feed it hand-made pickles). `source` names the file in errors.
// Each storage key is loaded once, however many tensors refer to it.
TensorDict unpickle_tensor_dict(std::string_view pickle, const StorageLoader& storages,
                                const std::string& source);

}  // namespace pipeline
