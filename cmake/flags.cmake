# Warning, sanitizer and fuzzer flags shared by every target.
add_compile_options(-Wall -Wextra -Wshadow -Wformat=2 -Wno-unused-parameter)
if(SNAPGATE_WERROR)
  add_compile_options(-Werror)
endif()
add_compile_definitions(_GNU_SOURCE)

if(SNAPGATE_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

if(SNAPGATE_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SNAPGATE_FUZZ needs clang: cmake -DCMAKE_C_COMPILER=clang -DSNAPGATE_FUZZ=ON")
  endif()
  # Instrument every library so coverage reaches the code under test.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
