"""The public Inter-X text-motion evaluator as DHVAE's InterX protocol runs it, transcribed as the
reference that tests/test_interx_evaluator.py checks ``motionfleet.dhvae.interx_evaluator`` and
``motionfleet.dhvae.interx`` against.

Sources (public repositories, read at the revisions in engine/dhvae/protocols/interx.toml):
liangxuy/Inter-X ``evaluation/text2motion/networks/modules.py`` (``init_weight``,
``MovementConvEncoder``, ``TextEncoderBiGRUCo``, ``MotionEncoderBiGRUCo``),
``networks/evaluator_wrapper.py`` (``get_co_embeddings``, ``get_motion_embeddings``),
``data/dataset.py`` (``collate_fn``, ``Text2MotionDatasetV2HHI.to_rot_6d`` and its token padding),
``utils/word_vectorizer.py`` (``WordVectorizer.__getitem__``), ``utils/rotation_conversions.py``
(PyTorch3D's ``axis_angle_to_quaternion``, ``quaternion_to_matrix``, ``matrix_to_rotation_6d``);
ZenGengChin/dhvae-official ``eval/interx/utils.py`` (``EvaluatorModelWrapper.prepare_motion``
and the ``unk/OTHER`` fallback). Names and structure are the public code's; the checkpoint
loading is replaced by ``load_state_dict`` of given state dicts. Nothing here is used by the engine.
"""

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence

# --- utils/rotation_conversions.py ------------------------------------------------------------


def quaternion_to_matrix(quaternions):
    r, i, j, k = torch.unbind(quaternions, -1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)

    o = torch.stack(
        (
            1 - two_s * (j * j + k * k),
            two_s * (i * j - k * r),
            two_s * (i * k + j * r),
            two_s * (i * j + k * r),
            1 - two_s * (i * i + k * k),
            two_s * (j * k - i * r),
            two_s * (i * k - j * r),
            two_s * (j * k + i * r),
            1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return o.reshape(quaternions.shape[:-1] + (3, 3))


def axis_angle_to_quaternion(axis_angle):
    angles = torch.norm(axis_angle, p=2, dim=-1, keepdim=True)
    half_angles = 0.5 * angles
    eps = 1e-6
    small_angles = angles.abs() < eps
    sin_half_angles_over_angles = torch.empty_like(angles)
    sin_half_angles_over_angles[~small_angles] = (
        torch.sin(half_angles[~small_angles]) / angles[~small_angles]
    )
    sin_half_angles_over_angles[small_angles] = (
        0.5 - (angles[small_angles] * angles[small_angles]) / 48
    )
    quaternions = torch.cat(
        [torch.cos(half_angles), axis_angle * sin_half_angles_over_angles], dim=-1
    )
    return quaternions


def axis_angle_to_matrix(axis_angle):
    return quaternion_to_matrix(axis_angle_to_quaternion(axis_angle))


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    return matrix[..., :2, :].clone().reshape(*matrix.size()[:-2], 6)


# --- data/dataset.py: Text2MotionDatasetV2HHI --------------------------------------------------


def to_rot_6d(data, num_person=2):
    joints3D = np.expand_dims(data[:, -1, :], axis=1)
    joints3D = torch.from_numpy(joints3D)
    ret_tr = joints3D[:, 0, :]

    pose = data[:, :-1, :]

    pose = torch.from_numpy(pose)
    pose_all = []
    for ii in range(num_person):
        pose_all.append(matrix_to_rotation_6d(axis_angle_to_matrix(pose[:, :, 3 * ii:3 * ii + 3])))
    ret = torch.cat(pose_all, dim=2)
    padded_tr = torch.zeros((ret.shape[0], ret.shape[2]), dtype=ret.dtype)
    for ii in range(num_person):
        padded_tr[:, 6 * ii:6 * ii + 3] = ret_tr[:, 3 * ii:3 * ii + 3]
    ret = torch.cat((ret, padded_tr[:, None]), 1)
    T = ret.shape[0]
    ret = torch.reshape(ret, (T, -1))
    return ret


def pad_tokens(tokens, max_text_len=35):
    if len(tokens) < max_text_len:
        # pad with "unk"
        tokens = ['sos/OTHER'] + tokens + ['eos/OTHER']
        sent_len = len(tokens)
        tokens = tokens + ['unk/OTHER'] * (max_text_len + 2 - sent_len)
    else:
        # crop
        tokens = tokens[:max_text_len]
        tokens = ['sos/OTHER'] + tokens + ['eos/OTHER']
        sent_len = len(tokens)
    return tokens, sent_len


# --- utils/word_vectorizer.py ------------------------------------------------------------------

POS_enumerator = {
    'VERB': 0, 'NOUN': 1, 'DET': 2, 'ADP': 3, 'NUM': 4, 'AUX': 5, 'PRON': 6, 'ADJ': 7, 'ADV': 8, 'Loc_VIP': 9,
    'Body_VIP': 10, 'Obj_VIP': 11, 'Act_VIP': 12, 'Desc_VIP': 13, 'OTHER': 14,
}
Loc_list = ('left', 'right', 'clockwise', 'counterclockwise', 'anticlockwise', 'forward', 'back', 'backward',
            'up', 'down', 'straight', 'curve')
Body_list = ('arm', 'chin', 'foot', 'feet', 'face', 'hand', 'mouth', 'leg', 'waist', 'eye', 'knee', 'shoulder', 'thigh')
Obj_List = ('stair', 'dumbbell', 'chair', 'window', 'floor', 'car', 'ball', 'handrail', 'baseball', 'basketball')
Act_list = ('walk', 'run', 'swing', 'pick', 'bring', 'kick', 'put', 'squat', 'throw', 'hop', 'dance', 'jump', 'turn',
            'stumble', 'dance', 'stop', 'sit', 'lift', 'lower', 'raise', 'wash', 'stand', 'kneel', 'stroll',
            'rub', 'bend', 'balance', 'flap', 'jog', 'shuffle', 'lean', 'rotate', 'spin', 'spread', 'climb')
Desc_list = ('slowly', 'carefully', 'fast', 'careful', 'slow', 'quickly', 'happy', 'angry', 'sad', 'happily',
             'angrily', 'sadly')
VIP_dict = {'Loc_VIP': Loc_list, 'Body_VIP': Body_list, 'Obj_VIP': Obj_List, 'Act_VIP': Act_list, 'Desc_VIP': Desc_list}


class WordVectorizer(object):
    def __init__(self, word2vec):  # the public one reads it from <prefix>_data.npy / _words.pkl / _idx.pkl
        self.word2vec = word2vec

    def _get_pos_ohot(self, pos):
        pos_vec = np.zeros(len(POS_enumerator))
        if pos in POS_enumerator:
            pos_vec[POS_enumerator[pos]] = 1
        else:
            pos_vec[POS_enumerator['OTHER']] = 1
        return pos_vec

    def __getitem__(self, item):
        word, pos = item.split('/')
        if word in self.word2vec:
            word_vec = self.word2vec[word]
            vip_pos = None
            for key, values in VIP_dict.items():
                if word in values:
                    vip_pos = key
                    break
            if vip_pos is not None:
                pos_vec = self._get_pos_ohot(vip_pos)
            else:
                pos_vec = self._get_pos_ohot(pos)
        else:
            word_vec = self.word2vec['unk']
            pos_vec = self._get_pos_ohot('OTHER')
        return word_vec, pos_vec


def encode_tokens(w_vectorizer, tokens):
    """Text2MotionDatasetV2HHI.__getitem__'s text part, with DHVAE's fallback for bad tokens."""
    tokens, sent_len = pad_tokens(list(tokens))
    pos_one_hots = []
    word_embeddings = []
    for token in tokens:
        try:
            word_emb, pos_oh = w_vectorizer[token]
        except Exception:
            word_emb, pos_oh = w_vectorizer['unk/OTHER']
        pos_one_hots.append(pos_oh[None, :])
        word_embeddings.append(word_emb[None, :])
    return np.concatenate(word_embeddings, axis=0), np.concatenate(pos_one_hots, axis=0), sent_len


# --- networks/modules.py -----------------------------------------------------------------------


def init_weight(m):
    if isinstance(m, nn.Conv1d) or isinstance(m, nn.Linear) or isinstance(m, nn.ConvTranspose1d):
        nn.init.xavier_normal_(m.weight)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)


class MovementConvEncoder(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super(MovementConvEncoder, self).__init__()
        self.main = nn.Sequential(
            nn.Conv1d(input_size, hidden_size, 4, 2, 1),
            nn.Dropout(0.2, inplace=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv1d(hidden_size, output_size, 4, 2, 1),
            nn.Dropout(0.2, inplace=True),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.out_net = nn.Linear(output_size, output_size)
        self.main.apply(init_weight)
        self.out_net.apply(init_weight)

    def forward(self, inputs):
        inputs = inputs.permute(0, 2, 1)
        outputs = self.main(inputs).permute(0, 2, 1)
        return self.out_net(outputs)


class TextEncoderBiGRUCo(nn.Module):
    def __init__(self, word_size, pos_size, hidden_size, output_size, device):
        super(TextEncoderBiGRUCo, self).__init__()
        self.device = device

        self.pos_emb = nn.Linear(pos_size, word_size)
        self.input_emb = nn.Linear(word_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(
            nn.Linear(hidden_size * 2, hidden_size),
            nn.LayerNorm(hidden_size),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_size, output_size)
        )

        self.input_emb.apply(init_weight)
        self.pos_emb.apply(init_weight)
        self.output_net.apply(init_weight)
        self.hidden_size = hidden_size
        self.hidden = nn.Parameter(torch.randn((2, 1, self.hidden_size), requires_grad=True))

    def forward(self, word_embs, pos_onehot, cap_lens):
        num_samples = word_embs.shape[0]

        pos_embs = self.pos_emb(pos_onehot)
        inputs = word_embs + pos_embs
        input_embs = self.input_emb(inputs)
        hidden = self.hidden.repeat(1, num_samples, 1)

        cap_lens = cap_lens.data.tolist()
        emb = pack_padded_sequence(input_embs, cap_lens, batch_first=True)

        gru_seq, gru_last = self.gru(emb, hidden)

        gru_last = torch.cat([gru_last[0], gru_last[1]], dim=-1)

        return self.output_net(gru_last)


class MotionEncoderBiGRUCo(nn.Module):
    def __init__(self, input_size, hidden_size, output_size, device):
        super(MotionEncoderBiGRUCo, self).__init__()
        self.device = device

        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(
            nn.Linear(hidden_size * 2, hidden_size),
            nn.LayerNorm(hidden_size),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden_size, output_size)
        )

        self.input_emb.apply(init_weight)
        self.output_net.apply(init_weight)
        self.hidden_size = hidden_size
        self.hidden = nn.Parameter(torch.randn((2, 1, self.hidden_size), requires_grad=True))

    def forward(self, inputs, m_lens):
        num_samples = inputs.shape[0]

        input_embs = self.input_emb(inputs)
        hidden = self.hidden.repeat(1, num_samples, 1)

        cap_lens = m_lens.data.tolist()
        emb = pack_padded_sequence(input_embs, cap_lens, batch_first=True)

        gru_seq, gru_last = self.gru(emb, hidden)

        gru_last = torch.cat([gru_last[0], gru_last[1]], dim=-1)

        return self.output_net(gru_last)


# --- networks/evaluator_wrapper.py with DHVAE's prepare_motion ---------------------------------


class EvaluatorModelWrapper(object):
    def __init__(self, opt, state):  # state: finest.tar's dict
        self.movement_encoder = MovementConvEncoder(opt.dim_pose, opt.dim_movement_enc_hidden, opt.dim_movement_latent)
        self.text_encoder = TextEncoderBiGRUCo(word_size=opt.dim_word, pos_size=opt.dim_pos_ohot,
                                               hidden_size=opt.dim_text_hidden, output_size=opt.dim_coemb_hidden,
                                               device=opt.device)
        self.motion_encoder = MotionEncoderBiGRUCo(input_size=opt.dim_movement_latent, hidden_size=opt.dim_motion_hidden,
                                                   output_size=opt.dim_coemb_hidden, device=opt.device)
        self.movement_encoder.load_state_dict(state['movement_encoder'])
        self.text_encoder.load_state_dict(state['text_encoder'])
        self.motion_encoder.load_state_dict(state['motion_encoder'])
        self.opt = opt
        self.device = opt.device
        self.text_encoder.eval()
        self.motion_encoder.eval()
        self.movement_encoder.eval()

    def prepare_motion(self, motions):  # DHVAE eval/interx/utils.py
        motions[:, :, -1, 9:] = 0
        motions[:, :, -1, 3:6] = 0
        motions = motions.reshape(motions.shape[0], motions.shape[1], -1)
        return motions

    # Please note that the results does not following the order of inputs
    def get_co_embeddings(self, word_embs, pos_ohot, cap_lens, motions, m_lens):
        with torch.no_grad():
            word_embs = word_embs.detach().to(self.device).float()
            pos_ohot = pos_ohot.detach().to(self.device).float()
            motions = motions.detach().to(self.device).float()

            align_idx = np.argsort(m_lens.data.tolist())[::-1].copy()
            motions = motions[align_idx]
            m_lens = m_lens[align_idx]

            '''Movement Encoding'''
            movements = self.movement_encoder(motions).detach()
            m_lens = m_lens // self.opt.unit_length
            motion_embedding = self.motion_encoder(movements, m_lens)

            '''Text Encoding'''
            text_embedding = self.text_encoder(word_embs, pos_ohot, cap_lens)
            text_embedding = text_embedding[align_idx]
        return text_embedding, motion_embedding


def collate_order(sent_lens):
    """data/dataset.py collate_fn: ``batch.sort(key=lambda x: x[3], reverse=True)`` (by sentence length)."""
    return sorted(range(len(sent_lens)), key=lambda i: sent_lens[i], reverse=True)
