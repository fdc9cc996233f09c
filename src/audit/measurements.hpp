// Reading measured throughput: `sparseflow benchmark --json` files (GEMM and model benchmarks) and
// the shipped table data/measured/*.json. The formats are written down in docs/DEPLOYMENT.md.
#pragma once
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

#include "audit/audit.hpp"

namespace sf::audit {

// Adds every GEMM and model benchmark found in `doc` to `out`. A document is one benchmark object,
// an array of them, or an object holding them under "results", "benchmarks", "cases", "shapes" or
// "entries"; "gpu", "date" and "command" are inherited from enclosing objects. `origin` names the
// source in messages. With require_provenance (the shipped table) a benchmark without "date" and
// "command" is an error. Throws sf::Error(Format) naming the field that is missing or malformed.
void parse_measurements(const nlohmann::json& doc, const std::string& origin, bool require_provenance,
                        Measurements& out);

// Reads and parses one file; Error(Io) when it cannot be read, Error(Format) when it is not JSON.
void load_measurement_file(const std::filesystem::path& file, bool require_provenance, Measurements& out);

// The shipped table's folder: $SPARSEFLOW_DATA_DIR/measured when that variable is set, else
// <prefix>/share/sparseflow/measured next to an installed binary, else the source tree's
// data/measured. Empty when none exists.
std::filesystem::path shipped_measurement_dir();

// Loads every *.json in `dir` (sorted by name) with require_provenance; returns how many files.
int load_measurement_dir(const std::filesystem::path& dir, Measurements& out);

}  // namespace sf::audit
