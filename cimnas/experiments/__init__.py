"""Jobs that use the library but are not part of it: hardware evaluation of design files and
reference keys, value statistics, variation fitting, predictor diagnostics."""
