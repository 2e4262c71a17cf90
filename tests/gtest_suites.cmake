# Run by ctest before it runs anything (a TEST_INCLUDE_FILES script, tests/CMakeLists.txt): adds one
# entry per gtest suite of BINARY, named PREFIX<Suite>, reading the suites from the binary itself,
# so that building never runs a test binary and a new test needs no re-configure.
#
# Why suites and not single tests: a process start costs some 25 ms of CPU here, and 4,600
# one-test entries spent more time starting than testing (an ISA's suite ran in 44 s as single
# tests against 18 s as suites, both on two slots).
if(NOT EXISTS "${BINARY}")
  # ctest reports the missing executable as this entry's failure.
  add_test("${PREFIX}NOT_BUILT" "${BINARY}")
  return()
endif()
execute_process(COMMAND "${BINARY}" --gtest_list_tests
                OUTPUT_VARIABLE listing RESULT_VARIABLE listed ERROR_VARIABLE errors)
if(NOT listed EQUAL 0)
  # The same command again as an entry, so that its failure and output show in the test report.
  add_test("${PREFIX}LIST_FAILED" "${BINARY}" --gtest_list_tests)
  return()
endif()
string(REPLACE "\n" ";" lines "${listing}")
foreach(line IN LISTS lines)
  # A suite line starts in column 0 and ends its name with a dot ("Fused." or
  # "HeadsDimsLengths/KernelContractSweep."), then perhaps "  # TypeParam = ..."; its tests are
  # indented beneath it.
  if(line MATCHES "^([^ .]+)\\.")
    set(suite "${CMAKE_MATCH_1}")
    add_test("${PREFIX}${suite}" "${BINARY}" "--gtest_filter=${suite}.*")
    # OpenMP threads that wait sleep rather than spin, so two entries sharing the cores slow each
    # other little (spinning made a whole binary take 205 s instead of 27).
    set_tests_properties("${PREFIX}${suite}" PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=PASSIVE)
  endif()
endforeach()
