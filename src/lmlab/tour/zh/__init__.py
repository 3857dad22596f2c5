"""The Chinese tour (``lmlab tour --lang zh``): word vectors on People's Daily segmented with jieba, sentiment on
Chinese reviews, a character-level GPT writing Chinese; the report is written in Chinese."""
