# Included by src/model/CMakeLists.txt with VOCAB, MERGES and OUT set.
# Writes the two tokenizer files as C byte arrays (kBuiltinVocabJson, kBuiltinMergesTxt) into OUT.
function(sf_embed var file out_text)
  file(READ ${file} hex HEX)
  file(SIZE ${file} size)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
  string(REGEX REPLACE "((0x..,){32})" "\\1\n" body "${body}")
  set(${out_text} "${${out_text}}static const unsigned char ${var}[] = {\n${body}0};\nstatic const unsigned long ${var}_size = ${size};\n" PARENT_SCOPE)
endfunction()
set(text "// Generated from tests/data/tokenizer by src/model/embed_files.cmake; do not edit.\n")
sf_embed(kBuiltinVocabJson ${VOCAB} text)
sf_embed(kBuiltinMergesTxt ${MERGES} text)
# Rewritten only when the contents change, so that a reconfigure does not rebuild synth.cpp.
file(CONFIGURE OUTPUT ${OUT} CONTENT "${text}" @ONLY)
