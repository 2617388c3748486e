"""Language-aware cleaning: good Chinese and Portuguese prose (with code blocks and formulas
mixed in) kept, injected junk removed, under each language's defaults.

What: for ``clean.language`` zh and pt with every other param at its default, the share of the
good documents' characters the per-document steps keep (target >= 95 %), the share of junk
documents they remove (target >= 90 %), and which rule removed what. The English rules
(``clean.language: en``, the old behaviour for these corpora) are run on the same set beside
them, for contrast.

How: ``python bench/clean_languages.py [--docs 200] [--seed 0]``. The set is built here from
sentences written for it: each good document is a Markdown-ish article of 3-6 paragraphs drawn
from a pool of prose sentences, with 0-2 fenced code blocks and 0-3 formulas ($...$ inline or
$$...$$ display); junk is five kinds (repeated lines, a navigation menu one entry per line, a
navigation bar on one line, symbol soup, keyword stuffing), each document drawn with variation.
The per-document steps (normalize, length, Gopher repetition, Gopher quality, FineWeb line
punctuation where the language has a threshold: pt and zh, not en) run in one process, as in
one datatrove task; dedup is not involved. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from typing import Any

from datatrove.data import Document

from lmops.config import CleanConfig
from lmops.data.filters import build_document_steps

FENCE = "`" * 3

ZH_SENTENCES = [
    "在开始之前，我们先简单回顾一下这个问题的背景。",
    "机器学习模型的效果在很大程度上取决于训练数据的质量。",
    "如果数据中有大量重复的样本，模型就会过度记住这些内容。",
    "因此，清洗数据是训练之前非常重要的一步。",
    "我们可以用一个简单的例子来说明这个过程。",
    "假设我们有一万篇文章，其中一部分来自同一个网站。",
    "这些文章的开头和结尾往往包含相同的导航栏和版权信息。",
    "对于这样的内容，最好的办法是在分词之前就把它们去掉。",
    "中文和英文不同，词与词之间没有空格。",
    "所以在统计词频的时候，需要先用分词工具把句子切分成词语。",
    "常用的中文分词工具有结巴分词和北大的分词器。",
    "分词的结果并不总是完全正确，但对于统计来说已经足够了。",
    "接下来，我们看看如何计算每篇文章的平均词长。",
    "平均词长可以帮助我们发现那些由乱码或符号组成的文本。",
    "另外，停用词的数量也是一个很有用的信号。",
    "正常的中文句子里通常会出现“的”、“是”、“在”这样的字。",
    "一段完全没有这些字的文字，很可能只是关键词的堆砌。",
    "当然，任何规则都有例外，我们需要在准确率和召回率之间做出权衡。",
    "在实际项目中，我们通常会先在一小部分数据上试验不同的阈值。",
    "然后人工检查被删除的样本，看看有没有误删的好文本。",
    "训练一个小模型只需要一台普通的笔记本电脑。",
    "学习率太大时，损失函数的值可能会突然变得很大。",
    "为了让结果可以复现，我们在程序开头固定了随机数种子。",
    "每一轮训练结束后，我们都会在验证集上评估模型的表现。",
    "如果验证集上的损失不再下降，就可以提前停止训练。",
    "这个方法在很多公开的数据集上都取得了不错的效果。",
    "读者可以尝试修改下面的参数，观察结果会有什么变化。",
    "最后，我们把清洗好的数据保存为文本文件，供后面的步骤使用。",
    "这篇文章的代码已经在 Python 3.11 和 NumPy 2.0 上测试过。",
    "如果你在运行时遇到问题，可以先检查依赖库的版本是否正确。",
    "矩阵乘法是神经网络中最常见的运算之一。",
    "在 GPU 上，这类运算可以并行执行，因此速度快得多。",
    "我们用一个两层的全连接网络来完成这个分类任务。",
    "第一层把输入映射到隐藏空间，第二层输出每个类别的分数。",
    "交叉熵损失常用于分类问题，它衡量预测分布和真实分布之间的差距。",
    "为了防止过拟合，可以在训练时加入正则化项或者使用丢弃法。",
]
ZH_TITLES = [
    "数据清洗入门",
    "用 Python 训练小模型",
    "梯度下降详解",
    "中文分词与统计",
    "神经网络基础",
]
ZH_FORMULAS_INLINE = ["$y = wx + b$", "$\\eta$", "$L(\\theta)$", "$x_i$", "$\\sigma(z)$"]
ZH_FORMULAS_DISPLAY = [
    "$$L = -\\sum_{i=1}^{n} y_i \\log \\hat{y}_i$$",
    "$$\\theta_{t+1} = \\theta_t - \\eta \\nabla L(\\theta_t)$$",
    "$$\\sigma(z) = \\frac{1}{1 + e^{-z}}$$",
]
ZH_FORMULA_LEADS = ["其中参数 {f} 表示模型的权重。", "我们把 {f} 记为第 i 个样本的损失。"]
ZH_CODE_LEADS = ["下面的代码演示了这个过程：", "完整的实现如下："]
ZH_FORMULA_INTROS = ["它的定义如下：", "更新规则可以写成："]

PT_SENTENCES = [
    "Antes de começar, vale a pena lembrar o contexto deste problema.",
    "A qualidade de um modelo depende muito dos dados usados no treino.",
    "Quando há muitos exemplos repetidos, o modelo tende a decorar esses textos.",
    "Por isso, a limpeza dos dados é uma etapa essencial do processo.",
    "Vamos ilustrar a ideia com um exemplo simples.",
    "Imagine que temos dez mil artigos, parte deles vindos do mesmo site.",
    "O início e o fim dessas páginas costumam repetir o mesmo menu e o mesmo rodapé.",
    "Nesse caso, o melhor é remover esses trechos antes de contar as palavras.",
    "Em português, as palavras mais frequentes são artigos e preposições, como de, a e o.",
    "Um texto sem nenhuma dessas palavras dificilmente é uma frase de verdade.",
    "A seguir, calculamos o comprimento médio das palavras de cada documento.",
    "Essa medida ajuda a encontrar textos formados por símbolos ou lixo.",
    "Nenhuma regra é perfeita, e é preciso equilibrar precisão e cobertura.",
    "Na prática, testamos os limites numa pequena amostra dos dados.",
    "Depois, lemos à mão os documentos removidos para ver se houve erros.",
    "Um modelo pequeno pode ser treinado num computador portátil comum.",
    "Se a taxa de aprendizagem for alta demais, a perda pode explodir de repente.",
    "Para que o resultado seja reproduzível, fixamos a semente do gerador aleatório.",
    "No fim de cada época, avaliamos o modelo no conjunto de validação.",
    "Quando a perda de validação para de cair, podemos interromper o treino.",
    "O método obteve bons resultados em vários conjuntos de dados públicos.",
    "O leitor pode alterar os parâmetros abaixo e observar o que muda.",
    "Por fim, gravamos os dados limpos num arquivo de texto para as etapas seguintes.",
    "O código deste artigo foi testado com Python 3.11 e NumPy 2.0.",
    "Se algo falhar, confira primeiro as versões das bibliotecas instaladas.",
    "A multiplicação de matrizes é uma das operações mais comuns numa rede neural.",
    "Numa placa gráfica, essas contas são feitas em paralelo e por isso são rápidas.",
    "Usamos uma rede de duas camadas para resolver a tarefa de classificação.",
    "A primeira camada leva a entrada a um espaço oculto, e a segunda dá a pontuação de cada classe.",
    "A entropia cruzada mede a distância entre a distribuição prevista e a verdadeira.",
    "Para evitar o sobreajuste, podemos acrescentar regularização ou usar dropout.",
    "A cidade tem uma biblioteca pública que abre todos os dias da semana.",
    "Os alunos da escola organizaram uma feira de ciências no mês passado.",
    "O rio que atravessa a região enche bastante durante o inverno.",
    "Muitas famílias preferem passar as férias no interior, longe do barulho.",
]
PT_TITLES = [
    "Limpeza de dados",
    "Treinar um modelo pequeno",
    "Descida do gradiente",
    "Redes neurais",
]
PT_FORMULAS_INLINE = ["$y = wx + b$", "$\\eta$", "$L(\\theta)$", "$x_i$", "$\\sigma(z)$"]
PT_FORMULAS_DISPLAY = ZH_FORMULAS_DISPLAY
PT_FORMULA_LEADS = ["Aqui, {f} representa os pesos do modelo.", "Chamamos {f} de perda da amostra."]
PT_CODE_LEADS = ["O código abaixo mostra esse passo:", "A implementação completa é esta:"]
PT_FORMULA_INTROS = ["A definição é a seguinte:", "A regra de atualização fica assim:"]

CODE_BLOCKS = [
    "import numpy as np\n\nrng = np.random.default_rng(0)\nx = rng.normal(size=(100, 3))\n"
    "w = np.zeros(3)\nprint(x.shape, w.shape)",
    "def train(model, data, lr=0.1):\n    for x, y in data:\n        loss = model.loss(x, y)\n"
    "        model.step(lr)\n    return model",
    "with open('corpus.txt', encoding='utf-8') as fh:\n    lines = [l.strip() for l in fh]\n"
    "print(len(lines))",
    "for epoch in range(10):\n    total = 0.0\n    for batch in loader:\n"
    "        total += step(batch)\n    print(epoch, total / len(loader))",
    "counts = {}\nfor word in text.split():\n    counts[word] = counts.get(word, 0) + 1\n"
    "top = sorted(counts.items(), key=lambda kv: -kv[1])[:10]",
    "$ pip install numpy\n$ python train.py --epochs 10 --lr 0.01",
]

LANG = {
    "zh": {
        "sentences": ZH_SENTENCES, "titles": ZH_TITLES, "inline": ZH_FORMULAS_INLINE,
        "display": ZH_FORMULAS_DISPLAY, "formula_leads": ZH_FORMULA_LEADS,
        "code_leads": ZH_CODE_LEADS, "formula_intros": ZH_FORMULA_INTROS, "join": "",
    },
    "pt": {
        "sentences": PT_SENTENCES, "titles": PT_TITLES, "inline": PT_FORMULAS_INLINE,
        "display": PT_FORMULAS_DISPLAY, "formula_leads": PT_FORMULA_LEADS,
        "code_leads": PT_CODE_LEADS, "formula_intros": PT_FORMULA_INTROS, "join": " ",
    },
}  # fmt: skip

JUNK_WORDS = {
    "zh": {
        "lines": ["点击这里下载最新版本", "免费注册领取优惠券", "本站所有资源均来自网络", "请关注我们的公众号"],
        "menu": ["首页", "新闻", "体育", "娱乐", "财经", "科技", "汽车", "房产", "登录", "注册",
                 "联系我们", "关于我们", "网站地图", "帮助中心", "隐私政策", "广告服务"],
        "keywords": ["便宜手机", "手机优惠", "正品保证", "包邮", "最低价", "限时抢购"],
        "footer": "版权所有 © 2024 某某网络科技有限公司",
    },
    "pt": {
        "lines": ["Clique aqui para baixar a nova versão", "Cadastre-se e ganhe um cupom",
                  "Todos os direitos reservados", "Siga a nossa página nas redes"],
        "menu": ["Início", "Notícias", "Esportes", "Entretenimento", "Economia", "Tecnologia",
                 "Entrar", "Cadastre-se", "Contato", "Sobre nós", "Mapa do site", "Ajuda",
                 "Política de privacidade", "Termos de uso", "Anuncie", "Assine"],
        "keywords": ["celular barato", "oferta imperdível", "frete grátis", "menor preço",
                     "promoção", "comprar agora"],
        "footer": "Copyright © 2024 Todos os direitos reservados",
    },
}  # fmt: skip
SYMBOLS = list("★☆※→【】#$%@◆■▲●○!?~^&*+=|<>") + ["...", "###", "$$$", "12345", "2024"]
JUNK_KINDS = ("repeated_lines", "menu_lines", "nav_bar", "symbol_soup", "keyword_stuffing")


def good_document(lang: str, rng: random.Random) -> str:
    """An article: a title, paragraphs of distinct sentences, code and formulas between them
    (each block, formula and lead-in used at most once, as an author would)."""
    p = LANG[lang]
    pool = rng.sample(p["sentences"], len(p["sentences"]))
    codes = rng.sample(CODE_BLOCKS, len(CODE_BLOCKS))
    displays = rng.sample(p["display"], len(p["display"]))
    inlines = rng.sample(p["inline"], len(p["inline"]))
    leads = {k: rng.sample(p[k], len(p[k])) for k in ("code_leads", "formula_intros")}
    formula_leads = rng.sample(p["formula_leads"], len(p["formula_leads"]))
    parts = [f"# {rng.choice(p['titles'])}"]
    for _ in range(rng.randint(3, 6)):
        k = rng.randint(2, 4)
        sentences, pool = pool[:k], pool[k:]
        if not sentences:
            break
        if formula_leads and rng.random() < 0.4:  # an inline formula inside the paragraph
            lead = formula_leads.pop().format(f=inlines.pop())
            sentences.insert(rng.randrange(len(sentences) + 1), lead)
        parts.append(p["join"].join(sentences))
        r = rng.random()
        if r < 0.3 and leads["code_leads"]:
            parts += [leads["code_leads"].pop(), f"{FENCE}python\n{codes.pop()}\n{FENCE}"]
        elif r < 0.45 and leads["formula_intros"]:
            parts += [leads["formula_intros"].pop(), displays.pop()]
    return "\n\n".join(parts)


def junk_document(lang: str, kind: str, rng: random.Random) -> str:
    w = JUNK_WORDS[lang]
    if kind == "repeated_lines":
        return "\n".join([rng.choice(w["lines"])] * rng.randint(8, 20))
    if kind == "menu_lines":
        return "\n".join(rng.sample(w["menu"], rng.randint(8, 14)) + [w["footer"]])
    if kind == "nav_bar":
        return " | ".join(rng.sample(w["menu"], rng.randint(8, 14)) + [w["footer"]])
    if kind == "symbol_soup":
        return " ".join(rng.choice(SYMBOLS) * rng.randint(1, 4) for _ in range(rng.randint(30, 80)))
    sep = "" if lang == "zh" and rng.random() < 0.5 else " "
    words = rng.sample(w["keywords"], 3)
    return sep.join(rng.choice(words) for _ in range(rng.randint(30, 80)))


class _Removed:
    """An exclusion writer that notes which rule removed which document."""

    def __init__(self, step: str, into: dict[str, str]) -> None:
        self.step, self.into = step, into

    def __enter__(self) -> _Removed:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, doc: Document, rank: int = 0) -> None:
        self.into[doc.id] = f"{self.step}:{doc.metadata.get('filter_reason')}"


def run_steps(cfg: CleanConfig, docs: list[Document]) -> tuple[set[str], dict[str, str]]:
    """Ids the per-document steps keep; the ``step:reason`` that removed each other id."""
    why: dict[str, str] = {}
    names = ("length", "gopher_repetition", "gopher_quality", "fineweb_quality")
    steps = build_document_steps(cfg, exclusion_writers={n: _Removed(n, why) for n in names})
    data: Any = iter(docs)
    for _, step in steps:
        data = step.run(data, 0, 1)
    return {d.id for d in data}, why


def measure(lang: str, rules: str, n_docs: int, seed: int) -> dict[str, Any]:
    rng = random.Random(f"{seed}:{lang}")
    good = [good_document(lang, rng) for _ in range(n_docs)]
    junk = [
        (kind, junk_document(lang, kind, rng)) for kind in JUNK_KINDS for _ in range(n_docs // 10)
    ]
    docs = [Document(t, f"good{i}") for i, t in enumerate(good)]
    docs += [Document(t, f"junk{i}:{kind}") for i, (kind, t) in enumerate(junk)]
    chars = {d.id: len(d.text) for d in docs}
    start = time.perf_counter()
    kept, why = run_steps(CleanConfig(language=rules), docs)
    seconds = time.perf_counter() - start
    good_ids = [d.id for d in docs if d.id.startswith("good")]
    junk_ids = [d.id for d in docs if d.id.startswith("junk")]
    by_kind = {
        kind: sum(1 for i in junk_ids if i.endswith(kind) and i not in kept) / (n_docs // 10)
        for kind in JUNK_KINDS
    }
    with_markup = [d.id for d in docs[: len(good)] if FENCE in d.text or "$" in d.text]
    return {
        "corpus": lang,
        "rules": rules,
        "good_documents": len(good_ids),
        "good_with_code_or_formulas": len(with_markup),
        "good_chars_kept": round(
            sum(chars[i] for i in good_ids if i in kept) / sum(chars[i] for i in good_ids), 4
        ),
        "good_documents_kept": sum(1 for i in good_ids if i in kept),
        "junk_documents": len(junk_ids),
        "junk_removed": round(sum(1 for i in junk_ids if i not in kept) / len(junk_ids), 4),
        "junk_removed_by_kind": by_kind,
        "good_removed_by_rule": dict(Counter(why[i] for i in good_ids if i in why).most_common()),
        "junk_removed_by_rule": dict(Counter(why[i] for i in junk_ids if i in why).most_common()),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=200, help="good documents per language")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = [
        measure(lang, rules, args.docs, args.seed)
        for lang in ("zh", "pt")
        for rules in (lang, "en")
    ]
    print(json.dumps(results, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
