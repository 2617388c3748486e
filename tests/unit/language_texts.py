"""Texts for the language-aware cleaning tests, written for them: good prose the defaults of
its language must keep whole (with code blocks and formulas mixed in, as technical writing
has them), and junk the same defaults must still remove."""

from __future__ import annotations

FENCE = "`" * 3

ZH_TUTORIAL = f"""# 用 NumPy 实现线性回归

在本教程中，我们将从零开始实现一个简单的线性回归模型。你只需要了解 Python 的基本语法，以及一点线性代数的知识。

## 1. 准备数据

首先，我们生成一组带有噪声的数据。假设真实的关系是 $y = 2x + 1$，我们在每个样本上加入均值为零的高斯噪声。

{FENCE}python
import numpy as np

rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, size=100)
y = 2 * x + 1 + rng.normal(0, 0.1, size=100)
{FENCE}

## 2. 损失函数

我们使用均方误差作为损失函数，它衡量预测值与真实值之间的平均差距：

$$L(w, b) = \\frac{{1}}{{n}} \\sum_{{i=1}}^{{n}} (w x_i + b - y_i)^2$$

对参数求偏导数，就可以得到梯度。梯度告诉我们，参数应该朝哪个方向移动，才能让损失变小。

## 3. 梯度下降

下面的代码在每一步中计算梯度，并按照学习率 $\\eta$ 更新参数。

{FENCE}python
w, b, lr = 0.0, 0.0, 0.1
for step in range(200):
    pred = w * x + b
    grad_w = 2 * np.mean((pred - y) * x)
    grad_b = 2 * np.mean(pred - y)
    w -= lr * grad_w
    b -= lr * grad_b
print(w, b)
{FENCE}

运行之后，你会看到 `w` 接近 2，`b` 接近 1。这说明模型已经学到了数据中的规律。如果学习率太大，损失可能会发散；如果太小，收敛会非常慢。

## 小结

线性回归虽然简单，却包含了机器学习中最重要的几个概念：模型、损失函数和优化方法。理解了它，再去学习神经网络就会容易得多。"""

# A short Chinese note whose code block holds more letters than its prose does.
ZH_CODE_HEAVY = f"""下面的脚本读取配置文件，并把结果写入数据库。运行前请确认环境变量已经设置好了。

{FENCE}python
import json
import sqlite3

with open("config.json", encoding="utf-8") as handle:
    settings = json.load(handle)
connection = sqlite3.connect(settings["database_path"])
connection.execute("CREATE TABLE IF NOT EXISTS results (name TEXT, value REAL)")
connection.commit()
{FENCE}

如果数据库文件不存在，程序会自动创建它。"""

PT_PARAGRAPHS = [
    "A cidade de Lisboa é a capital de Portugal e fica na margem norte do rio Tejo. Ao longo "
    "dos séculos, o porto da cidade foi um ponto de partida para navegadores que procuravam "
    "novas rotas comerciais. Hoje, os bairros antigos atraem visitantes de todo o mundo.",
    "Para fazer um bom pão caseiro, misture a farinha com a água morna e uma pitada de sal. "
    "Deixe a massa descansar durante uma hora, até que ela dobre de tamanho. Depois, leve ao "
    "forno bem quente e espere que a casca fique dourada e estaladiça.",
    "Neste exemplo, a função $f(x) = x^2 - 4x + 3$ tem duas raízes reais. Para encontrá-las, "
    "usamos a fórmula de Bhaskara:\n\n"
    "$$x = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a}$$\n\n"
    "Substituindo os coeficientes, obtemos $x = 1$ e $x = 3$, que são os pontos onde o gráfico "
    "da parábola corta o eixo horizontal.",
    "O programa abaixo conta quantas vezes cada palavra aparece em um texto. Ele usa um "
    "dicionário para guardar as contagens e, no final, mostra as palavras mais frequentes.\n\n"
    f"{FENCE}python\n"
    "from collections import Counter\n\n"
    "def contar(texto):\n"
    "    return Counter(texto.lower().split())\n\n"
    "print(contar('o gato e o rato').most_common(2))\n"
    f"{FENCE}\n\n"
    "Repare que a função não remove a pontuação: para textos reais, é melhor fazer isso antes "
    "de contar as palavras.",
]

JA_PARAGRAPH = (
    "東京は日本の首都であり、多くの人々が暮らしています。私は毎朝コーヒーを飲んでから、電車で会社に"
    "行きます。週末には公園を散歩したり、友達と一緒に新しいレストランを探したりするのが好きです。"
    "春になると、川沿いの桜がとてもきれいに咲きます。"
)

JUNK = {
    "zh": {
        "repeated_lines": "点击这里下载最新版本的软件\n" * 12,
        "boilerplate": "首页\n新闻\n体育\n娱乐\n财经\n科技\n汽车\n房产\n登录\n注册\n"
        "联系我们\n关于我们\n网站地图\n版权所有 © 2024 某某网络科技有限公司",
        "symbol_soup": "★☆★☆ ※※※ →→→ 【】【】 ###### $$$ %%% @@@ ◆◆◆ ■■■ ▲▲▲ ●●● ○○○ "
        "!!! ??? ~~~ ^^^ &&& *** +++ === ||| <<< >>>",
        "keyword_stuffing": "便宜手机 手机优惠 便宜手机 手机优惠 " * 15,
    },
    "pt": {
        "repeated_lines": "Clique aqui para baixar a nova versão grátis\n" * 12,
        "boilerplate": "Início\nNotícias\nEsportes\nEntretenimento\nEconomia\nTecnologia\n"
        "Entrar\nCadastre-se\nContato\nSobre nós\nMapa do site\n"
        "Copyright © 2024 Todos os direitos reservados",
        "symbol_soup": "### $$$ %%% @@@ *** +++ === ||| <<< >>> !!! ??? ~~~ ^^^ &&& "
        "12345 67890 ### $$$ %%% @@@ *** +++",
        "keyword_stuffing": "comprar celular barato oferta celular barato " * 15,
    },
    "ja": {
        "repeated_lines": "今すぐ無料でダウンロードしてください\n" * 12,
        "boilerplate": "ホーム\nニュース\nスポーツ\nエンタメ\n経済\nテクノロジー\nログイン\n"
        "新規登録\nお問い合わせ\n会社概要\nサイトマップ\nCopyright © 2024",
        "symbol_soup": "★☆★☆ ※※※ →→→ 【】【】 ###### $$$ %%% @@@ ◆◆◆ ■■■ ▲▲▲ ●●● ○○○ "
        "!!! ??? ~~~ ^^^ &&& *** +++ === ||| <<< >>>",
        "keyword_stuffing": "格安スマホ 激安セール 格安スマホ 激安セール " * 15,
    },
}
