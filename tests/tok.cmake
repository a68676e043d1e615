# tests/tok.cmake: the tokenizer tests (client/tok.c) against both models'
# reference ids and texts, plus malformed-input and UTF-8 streaming checks.
inflash_cmocka(test_tok test_tok.c)
target_link_libraries(test_tok PRIVATE inflash_tok)
