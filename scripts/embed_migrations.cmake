# Turns migrations/NNNN_name.sql files into a C array of {version, name, sql}.
# Invoked by CMakeLists.txt with -DOUT=<file.c> -DFILES=<list>.
set(body "/* generated from migrations/NNNN_name.sql: do not edit */\n#include \"ns_migrate.h\"\n\n")
set(rows "")
foreach(f IN LISTS FILES)
  get_filename_component(name ${f} NAME_WE)
  string(REGEX MATCH "^[0-9]+" ver ${name})
  file(READ ${f} sql HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," sql "${sql}")
  string(APPEND body "static const char mig_${ver}[] = {${sql} 0x00};\n")
  string(APPEND rows "  {${ver}, \"${name}\", mig_${ver}},\n")
endforeach()
string(APPEND body "\nconst ns_migration ns_migrations[] = {\n${rows}  {0, NULL, NULL}\n};\n")
file(WRITE ${OUT} "${body}")
