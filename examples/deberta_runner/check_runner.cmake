# End-to-end checks of the built deberta_runner, run by CTest (tests/CMakeLists.txt):
#   cmake -DRUNNER=<deberta_runner> -DOUT=<dir> -DMODE=smoke|bad-task|missing-spm -P check_runner.cmake
# smoke        a tiny demo run (1 pretraining epoch on 60 sentences, 1 epoch of
#              Partial-LoRA with SVD ratios): exit code 0 and every output file;
#              then LoRA on a 12-line SST-2 through --checkpoint (the demo's saved
#              Hugging Face checkpoint) --task --data: exit code 0 and a report;
#              an SST-2 training set of one label: exit code 1, the label named
# bad-task     an unknown --task: exit code 1 and a message naming the task
# missing-spm  a checkpoint directory without spm.model: exit code 1 and a
#              message naming the missing file
cmake_minimum_required(VERSION 3.25)  # quoted if() arguments are strings (CMP0054)
foreach(var RUNNER OUT MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_runner.cmake: -D${var}=... is required")
  endif()
endforeach()
file(REMOVE_RECURSE "${OUT}")

# run(<expected exit code> <args...>): runs the runner; sets out / err in the caller.
macro(run expected)
  execute_process(COMMAND "${RUNNER}" ${ARGN} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT code EQUAL ${expected})
    message(FATAL_ERROR "deberta_runner ${ARGN}\nexited with ${code}, expected ${expected}\nstdout:\n${out}\nstderr:\n${err}")
  endif()
endmacro()

# expect_in_stderr(<text>): the error message names <text>.
function(expect_in_stderr text)
  string(FIND "${err}" "${text}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the error message does not name '${text}':\n${err}")
  endif()
endfunction()

if(MODE STREQUAL "smoke")
  run(0 --output "${OUT}/demo" --pretrain-epochs 1 --epochs 1 --max-train 60 --max-test 30 --shots 2
        --probe-epochs 2 --batch 20 --quiet)
  foreach(file report.json ratios.json adapter_model.safetensors adapter_config.json ratios.svg params.svg
               pretrained/model.safetensors pretrained/config.json pretrained/spm.model pretrained/pretrain.json)
    if(NOT EXISTS "${OUT}/demo/${file}")
      message(FATAL_ERROR "deberta_runner wrote no ${OUT}/demo/${file}\nstdout:\n${out}")
    endif()
  endforeach()
  file(READ "${OUT}/demo/report.json" report)
  string(JSON method GET "${report}" method)
  string(JSON adapters GET "${report}" trainable_params adapters)
  string(JSON task GET "${report}" task dataset task)
  if(NOT method STREQUAL "partial-lora" OR adapters LESS_EQUAL 0 OR NOT task STREQUAL "licenses")
    message(FATAL_ERROR "report.json: method '${method}', task '${task}', ${adapters} adapter parameters")
  endif()

  # The demo's checkpoint as a user's: GLUE SST-2 files (sentence<TAB>label, a header line).
  set(rows "sentence\tlabel\n")
  foreach(i RANGE 1 6)
    string(APPEND rows "you may copy and distribute the program ${i}\t1\nthere is no warranty for this work ${i}\t0\n")
  endforeach()
  file(WRITE "${OUT}/sst2/train.tsv" "${rows}")
  file(WRITE "${OUT}/sst2/dev.tsv" "${rows}")
  run(0 --checkpoint "${OUT}/demo/pretrained" --task SST-2 --data "${OUT}/sst2" --adapter lora --epochs 1
        --batch 4 --output "${OUT}/glue" --quiet)
  file(READ "${OUT}/glue/report.json" report)
  string(JSON method GET "${report}" method)
  string(JSON task GET "${report}" task dataset task)
  string(JSON examples GET "${report}" task dataset train_examples)
  if(NOT method STREQUAL "lora" OR NOT task STREQUAL "sst2" OR NOT examples EQUAL 12)
    message(FATAL_ERROR "report.json of the GLUE run: method '${method}', task '${task}', ${examples} examples")
  endif()

  # A training set of one class: refused (its extracted ratios would all pass trivially).
  set(rows "sentence\tlabel\n")
  foreach(i RANGE 1 4)
    string(APPEND rows "you may copy and distribute the program ${i}\t1\n")
  endforeach()
  file(WRITE "${OUT}/one-class/train.tsv" "${rows}")
  file(WRITE "${OUT}/one-class/dev.tsv" "${rows}")
  run(1 --checkpoint "${OUT}/demo/pretrained" --task sst2 --data "${OUT}/one-class" --epochs 1 --batch 4
        --output "${OUT}/one-class-run" --quiet)
  expect_in_stderr("task sst2: the training set holds only label 1; a classifier needs examples of at least 2 classes")
elseif(MODE STREQUAL "bad-task")
  file(MAKE_DIRECTORY "${OUT}")
  run(1 --checkpoint "${OUT}" --task no-such-task --data "${OUT}" --output "${OUT}/run")
  expect_in_stderr("no-such-task")
elseif(MODE STREQUAL "missing-spm")
  file(WRITE "${OUT}/checkpoint/config.json" "{}")
  file(WRITE "${OUT}/checkpoint/model.safetensors" "")
  run(1 --checkpoint "${OUT}/checkpoint" --task sst2 --data "${OUT}" --output "${OUT}/run")
  expect_in_stderr("${OUT}/checkpoint/spm.model")
else()
  message(FATAL_ERROR "check_runner.cmake: unknown MODE '${MODE}'")
endif()
