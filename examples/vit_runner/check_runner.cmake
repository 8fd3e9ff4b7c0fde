# End-to-end checks of the built vit_runner, run by CTest (tests/CMakeLists.txt):
#   cmake -DRUNNER=<vit_runner> -DOUT=<dir> -DMODE=smoke|bad-checkpoint|bad-options -P check_runner.cmake
# smoke           a tiny demo run (1 pretraining epoch on 100 images, 1 epoch of
#                 Partial-LoRA with SVD ratios): exit code 0 and every output file
# bad-checkpoint  a checkpoint directory that does not exist: exit code 1 and a
#                 message on stderr that names the directory
# bad-options     a NaN learning rate (CLI11's validation exit code 105, the
#                 option named), and a --pretrained-dir holding someone's
#                 model.safetensors: exit code 1, the file left as it was; an
#                 option the run would ignore (--tau with --adapter lora), a
#                 file as --output and an empty item in --targets: exit code 1
#                 before any work, the cause named
# resume          a 2-epoch demo run uninterrupted, and stopped after step 3
#                 (mid-epoch) then resumed: byte-identical adapter files and the
#                 same history in report.json (also --stop-after at the last
#                 step, which ends the run as usual); a resume under another seed,
#                 --epochs, --tau, masks or base weights, or with a --stop-after it has passed,
#                 and one without a saved state: exit code 1,
#                 the cause named; --keep-head on the demo's pretrained 5-class
#                 head for the 10 digits, and a preprocessor resizing to 9 x 9
#                 for the demo's 8 x 8 model: exit code 1, both sizes named
foreach(var RUNNER OUT MODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_runner.cmake: -D${var}=... is required")
  endif()
endforeach()
file(REMOVE_RECURSE "${OUT}")

if(MODE STREQUAL "smoke")
  execute_process(COMMAND "${RUNNER}" --output "${OUT}" --pretrain-epochs 1 --epochs 1 --max-train 100
                          --max-test 50 --shots 2 --probe-epochs 2 --batch 25 --quiet
                  RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "vit_runner exited with ${code}\nstdout:\n${out}\nstderr:\n${err}")
  endif()
  foreach(file report.json ratios.json adapter_model.safetensors adapter_config.json ratios.svg params.svg
               pretrained/model.safetensors pretrained/config.json pretrained/preprocessor_config.json)
    if(NOT EXISTS "${OUT}/${file}")
      message(FATAL_ERROR "vit_runner wrote no ${OUT}/${file}\nstdout:\n${out}")
    endif()
  endforeach()
  file(READ "${OUT}/report.json" report)
  string(JSON method GET "${report}" method)
  string(JSON adapters GET "${report}" trainable_params adapters)
  if(NOT method STREQUAL "partial-lora" OR adapters LESS_EQUAL 0)
    message(FATAL_ERROR "report.json: method '${method}', ${adapters} adapter parameters")
  endif()
elseif(MODE STREQUAL "bad-checkpoint")
  set(missing "${OUT}/no-such-checkpoint")
  execute_process(COMMAND "${RUNNER}" --checkpoint "${missing}" --dataset digits --output "${OUT}"
                  RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT code EQUAL 1)
    message(FATAL_ERROR "expected exit code 1 for a missing checkpoint, got ${code}\nstderr:\n${err}")
  endif()
  string(FIND "${err}" "${missing}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the error message does not name '${missing}':\n${err}")
  endif()
elseif(MODE STREQUAL "bad-options")
  execute_process(COMMAND "${RUNNER}" --lr nan --output "${OUT}" RESULT_VARIABLE code ERROR_VARIABLE err)
  string(FIND "${err}" "--lr: 'nan' is not a finite number > 0" at)
  if(NOT code EQUAL 105 OR at EQUAL -1)
    message(FATAL_ERROR "--lr nan: expected exit code 105 naming --lr, got ${code}\nstderr:\n${err}")
  endif()
  set(user "${OUT}/user-checkpoint")
  file(WRITE "${user}/model.safetensors" "the user's weights")
  execute_process(COMMAND "${RUNNER}" --pretrained-dir "${user}" --output "${OUT}/run" --quiet
                  RESULT_VARIABLE code ERROR_VARIABLE err)
  file(READ "${user}/model.safetensors" kept)
  string(FIND "${err}" "not overwriting" at)
  if(NOT code EQUAL 1 OR at EQUAL -1 OR NOT kept STREQUAL "the user's weights")
    message(FATAL_ERROR "--pretrained-dir on a checkpoint: exit code ${code}, file now '${kept}'\nstderr:\n${err}")
  endif()
  execute_process(COMMAND "${RUNNER}" --adapter lora --tau 0.5 --output "${OUT}/run" --quiet RESULT_VARIABLE code
                  ERROR_VARIABLE err)
  string(FIND "${err}" "--tau applies only when ratios are extracted" at)
  if(NOT code EQUAL 1 OR at EQUAL -1)
    message(FATAL_ERROR "--tau with --adapter lora: exit code ${code}, expected 1 naming --tau\nstderr:\n${err}")
  endif()
  execute_process(COMMAND "${RUNNER}" --output "${user}/model.safetensors" --quiet RESULT_VARIABLE code ERROR_VARIABLE err)
  string(FIND "${err}" "--output '${user}/model.safetensors' cannot be made a directory" at)
  if(NOT code EQUAL 1 OR at EQUAL -1 OR EXISTS "${user}/model.safetensors/pretrained")
    message(FATAL_ERROR "a file as --output: exit code ${code}\nstderr:\n${err}")
  endif()
  execute_process(COMMAND "${RUNNER}" --targets query,,value --output "${OUT}/run" --quiet RESULT_VARIABLE code
                  ERROR_VARIABLE err)
  string(FIND "${err}" "--targets: '' is not a module name" at)
  if(NOT code EQUAL 1 OR at EQUAL -1)
    message(FATAL_ERROR "--targets query,,value: exit code ${code}, expected 1 naming --targets\nstderr:\n${err}")
  endif()
elseif(MODE STREQUAL "resume")
  set(epochs 2)
  set(extraction --shots 2 --probe-epochs 2)
  set(args --pretrain-epochs 1 --max-train 100 --max-test 50 --batch 25 --quiet --pretrained-dir "${OUT}/pretrained")
  function(run_vit out expected_code)
    execute_process(COMMAND "${RUNNER}" ${args} ${extraction} --epochs ${epochs} --output ${out} ${ARGN}
                    RESULT_VARIABLE code OUTPUT_VARIABLE stdout ERROR_VARIABLE stderr)
    if(NOT code EQUAL expected_code)
      message(FATAL_ERROR "vit_runner --output ${out} ${ARGN}: exit code ${code}, expected ${expected_code}\n"
                          "stdout:\n${stdout}\nstderr:\n${stderr}")
    endif()
    set(stderr "${stderr}" PARENT_SCOPE)
  endfunction()
  run_vit("${OUT}/straight" 0)
  run_vit("${OUT}/resumed" 0 --stop-after 3)  # 4 steps per epoch: stops inside the first
  if(EXISTS "${OUT}/resumed/report.json" OR NOT EXISTS "${OUT}/resumed/training_state.safetensors")
    message(FATAL_ERROR "--stop-after 3 wrote a report or no training state")
  endif()
  run_vit("${OUT}/resumed" 1 --resume --seed 1)
  string(FIND "${stderr}" "cannot resume a run of seed 0 under seed 1" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "--resume --seed 1: the seed is not named:\n${stderr}")
  endif()
  set(epochs 3)  # another schedule: not the run that was stopped
  run_vit("${OUT}/resumed" 1 --resume)
  set(epochs 2)
  string(FIND "${stderr}" "cannot resume a run of --epochs 2 under --epochs 3" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "--resume --epochs 3: the option is not named:\n${stderr}")
  endif()
  set(extraction)  # other masks, from ratios given instead of extracted
  run_vit("${OUT}/resumed" 1 --resume --ratio 0.5)
  set(extraction --shots 2 --probe-epochs 2)
  string(FIND "${stderr}" "cannot resume a run of mask digest " at)
  if(at EQUAL -1)
    message(FATAL_ERROR "--resume --ratio 0.5: the masks are not named:\n${stderr}")
  endif()
  run_vit("${OUT}/resumed" 1 --resume --tau 0.5)  # the saved ratios were extracted at tau 0.9
  string(FIND "${stderr}" "cannot resume a run of --tau 0.9 under --tau 0.5" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "--resume --tau 0.5: the option is not named:\n${stderr}")
  endif()
  set(resumed_args "${args}")  # a base model pretrained for 2 epochs: the same shapes, other weights
  set(args --pretrain-epochs 2 --max-train 100 --max-test 50 --batch 25 --quiet --pretrained-dir "${OUT}/pretrained-2")
  run_vit("${OUT}/resumed" 1 --resume)
  set(args "${resumed_args}")
  string(FIND "${stderr}" "cannot resume a run of base weights " at)
  if(at EQUAL -1)
    message(FATAL_ERROR "--resume on other base weights: the weights are not named:\n${stderr}")
  endif()
  run_vit("${OUT}/resumed" 1 --resume --stop-after 3)
  string(FIND "${stderr}" "--stop-after 3: the resumed run is already at step 3" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "--resume --stop-after 3 at step 3: not refused:\n${stderr}")
  endif()
  run_vit("${OUT}/resumed" 0 --resume)
  file(SHA256 "${OUT}/straight/adapter_model.safetensors" straight)
  file(SHA256 "${OUT}/resumed/adapter_model.safetensors" resumed)
  file(READ "${OUT}/straight/report.json" straight_report)
  file(READ "${OUT}/resumed/report.json" resumed_report)
  string(JSON straight_history GET "${straight_report}" history)
  string(JSON resumed_history GET "${resumed_report}" history)
  string(JSON epochs LENGTH "${resumed_history}")
  if(NOT straight STREQUAL resumed OR NOT straight_history STREQUAL resumed_history OR NOT epochs EQUAL 2)
    message(FATAL_ERROR "stopped + resumed differs from uninterrupted: adapters ${straight} / ${resumed}, "
                        "history ${straight_history} / ${resumed_history}")
  endif()
  run_vit("${OUT}/to-the-end" 0 --stop-after 8)  # the last step: the run ends as usual, evaluated and written
  file(SHA256 "${OUT}/to-the-end/adapter_model.safetensors" to_the_end)
  file(READ "${OUT}/to-the-end/report.json" to_the_end_report)
  string(JSON to_the_end_history GET "${to_the_end_report}" history)
  if(NOT to_the_end STREQUAL straight OR NOT to_the_end_history STREQUAL straight_history)
    message(FATAL_ERROR "--stop-after at the last step: history ${to_the_end_history}, expected ${straight_history}")
  endif()
  # The demo's pretrained checkpoint has a 5-class head (digits 0-4); digits has 10 classes.
  execute_process(COMMAND "${RUNNER}" --checkpoint "${OUT}/pretrained" --dataset digits --keep-head --epochs 1
                          --max-train 100 --max-test 50 --batch 25 --quiet --output "${OUT}/keep-head"
                  RESULT_VARIABLE code ERROR_VARIABLE stderr)
  string(FIND "${stderr}" "has no classifier for the dataset's 10 classes (classifier.weight [5, " at)
  if(NOT code EQUAL 1 OR at EQUAL -1)
    message(FATAL_ERROR "--keep-head on a 5-class head for 10 classes: exit code ${code}\nstderr:\n${stderr}")
  endif()
  # A preprocessor that resizes to another size than the model's: refused before any image is decoded.
  file(COPY "${OUT}/pretrained/config.json" "${OUT}/pretrained/model.safetensors" DESTINATION "${OUT}/resized")
  file(WRITE "${OUT}/resized/preprocessor_config.json" [=[{"size": {"height": 9, "width": 9}}]=])
  execute_process(COMMAND "${RUNNER}" --checkpoint "${OUT}/resized" --dataset digits --epochs 1 --quiet
                          --output "${OUT}/resized-run" RESULT_VARIABLE code ERROR_VARIABLE stderr)
  string(FIND "${stderr}" "resizes images to 9 x 9 but the checkpoint's image_size is 8" at)
  if(NOT code EQUAL 1 OR at EQUAL -1)
    message(FATAL_ERROR "a 9 x 9 preprocessor for an 8 x 8 model: exit code ${code}\nstderr:\n${stderr}")
  endif()
  run_vit("${OUT}/empty" 1 --resume)
  string(FIND "${stderr}" "--resume: no training state '${OUT}/empty/training_state.safetensors'" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "--resume without a state: the file is not named:\n${stderr}")
  endif()
else()
  message(FATAL_ERROR "check_runner.cmake: unknown MODE '${MODE}'")
endif()
