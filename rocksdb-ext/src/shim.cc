// The RocksDB calls wingkv needs that its C API (and so rust-rocksdb) does not offer. Every
// function catches what C++ might throw: nothing unwinds into Rust.

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "rocksdb/options.h"
#include "rocksdb/sst_file_reader.h"
#include "rocksdb/sst_file_writer.h"
#include "rocksdb/table_properties.h"
#include "rocksdb/unique_id.h"

namespace {

char* copy_message(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.data(), s.size());
    out[s.size()] = '\0';
  }
  return out;
}

// Answers a failed `s` as the shim's calls do: 2 for an I/O error, 1 for anything else, with
// its message in `*error`.
int status_error(const rocksdb::Status& s, char** error) {
  *error = copy_message(s.ToString());
  return s.IsIOError() ? 2 : 1;
}

// Runs `body` (which answers the call's return code), answering 1 with a message for anything
// it throws: nothing unwinds into Rust.
template <typename Body>
int guarded(char** error, Body body) {
  try {
    return body();
  } catch (const std::exception& e) {
    *error = copy_message(std::string("RocksDB threw: ") + e.what());
    return 1;
  } catch (...) {
    *error = copy_message("RocksDB threw");
    return 1;
  }
}

}  // namespace

extern "C" {

// `options` is a `rocksdb_ingestexternalfileoptions_t*` of the C API, which is
// `struct { IngestExternalFileOptions rep; }` (db/c.cc): its address is that of `rep`.
void wingkv_ingest_options_set_allow_db_generated_files(void* options, unsigned char allow) {
  static_cast<rocksdb::IngestExternalFileOptions*>(options)->allow_db_generated_files = allow != 0;
}

// Reads the table properties of the SST file at `path`. Returns 0 and fills the outputs, or
// returns 2 (an I/O error: missing file, failed read) or 1 (anything else: the bytes are not a
// readable SST file) with a malloc'd message in `*error` (free it with `wingkv_free`).
// `unique_id` has room for 24 bytes; `*unique_id_len` is set to 24, or to 0 when the file has
// no unique id (written before RocksDB recorded what it is made of).
int wingkv_sst_file_properties(const char* path, uint64_t* key_largest_seqno, uint64_t* entries,
                               unsigned char* by_sst_file_writer, unsigned char* unique_id,
                               size_t* unique_id_len, char** error) {
  return guarded(error, [&] {
    rocksdb::Options options;
    rocksdb::SstFileReader reader(options);
    rocksdb::Status s = reader.Open(path);
    if (!s.ok()) {
      return status_error(s, error);
    }
    std::shared_ptr<const rocksdb::TableProperties> props = reader.GetTableProperties();
    if (!props) {
      *error = copy_message("the file has no table properties");
      return 1;
    }
    *key_largest_seqno = props->key_largest_seqno;
    *entries = props->num_entries + props->num_range_deletions;
    *by_sst_file_writer = rocksdb::SstFileWriter::CreatedBySstFileWriter(*props) ? 1 : 0;
    std::string id;
    *unique_id_len = 0;
    if (rocksdb::GetExtendedUniqueIdFromTableProperties(*props, &id).ok() && id.size() == 24) {
      std::memcpy(unique_id, id.data(), id.size());
      *unique_id_len = id.size();
    }
    return 0;
  });
}

// Reads every block of the SST file at `path` and checks its checksum (the stored bytes, not
// decompressed), and the footer's. Returns 0, or 2 (an I/O error) or 1 (a damaged or unreadable
// file) with a malloc'd message in `*error` (free it with `wingkv_free`).
int wingkv_sst_verify_checksums(const char* path, char** error) {
  return guarded(error, [&] {
    rocksdb::Options options;
    rocksdb::SstFileReader reader(options);
    rocksdb::Status s = reader.Open(path);
    if (s.ok()) {
      rocksdb::ReadOptions read;
      read.fill_cache = false;
      read.readahead_size = 2 << 20;
      s = reader.VerifyChecksum(read);
    }
    return s.ok() ? 0 : status_error(s, error);
  });
}

void wingkv_free(char* p) { std::free(p); }

}  // extern "C"
